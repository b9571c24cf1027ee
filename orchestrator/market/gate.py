"""The closed-candle gate: validated, final, gap-checked candles, each exactly once.

A feed actor wraps any source with one ``CandleGate`` per (exchange, timeframe)::

    final = gate.offer(batch, now_ms)               # validate, quarantine, gate
    for gap in gate.take_gaps():                    # gaps detected since the last call
        repaired = await source.fetch_range(gap.symbol, gap.start_ms, gap.end_ms)  # or None
        resolution = gate.resolve_gap(gap, repaired, now_ms)
        # emit resolution.candles; resolution.unrepairable lists holes left for good
    periodically: gate.flush(now_ms)                # candles whose period + grace has ended

API
---
``CandleGate(exchange, timeframe="1m", *, grace_ms=DEFAULT_GRACE_MS,
max_pending=DEFAULT_MAX_PENDING, symbols=None, future_tolerance_ms=FUTURE_TOLERANCE_MS,
quarantine_size=1000, max_unrepairable_kept=256)``
``offer(batch, now_ms) -> pa.RecordBatch`` / ``flush(now_ms) -> pa.RecordBatch``
    candles that became final, in ``CANDLE_SCHEMA``, ordered by (open_time, symbol).
``take_gaps() -> list[Gap]``: gaps detected and not yet handed out.
``resolve_gap(gap, repaired, now_ms) -> GapResolution(candles, unrepairable)``
    ``repaired`` is a batch/table or None; stale gaps (already resolved) give an empty
    resolution. Every handed-out gap must be resolved: its symbol is held until then.
``open_gaps``, ``unrepairable`` (recent, bounded), ``quarantine``, ``counters``,
``status()``, ``last_emitted(symbol)``, ``set_symbols(symbols | None)``,
``snapshot() -> dict`` / ``CandleGate.from_snapshot(snap)`` (plain picklable data; a
restored gate hands out every open gap again, since one taken before the checkpoint
may never have been resolved).

Rules, per symbol
-----------------
* Only final candles go downstream, exactly once per (exchange, symbol, timeframe,
  open_time). A candle is final when ``now_ms >= open_time + tf_ms + grace_ms`` or when
  a newer candle of the same symbol has been offered.
* A not-yet-emitted candle offered again is replaced (last write wins): counted as a
  ``revision`` when a price/volume differs, else as a ``duplicate``.
* A candle at or before the last emitted one is dropped: a ``duplicate`` when that open
  time was emitted, otherwise ``out_of_order`` (also quarantined): before the symbol's
  first candle, or inside a recorded unrepairable hole.
* The first candle of a symbol starts it. When the next final candle is more than one
  period after the last emitted one, a ``Gap`` is recorded and the symbol's newer
  candles are held until ``resolve_gap``. ``Gap.start_ms`` is the first missing open
  time (inclusive), ``Gap.end_ms`` the open time of the candle after the hole
  (exclusive). Candles offered inside an open gap wait there too; repaired rows win.
  Minutes nobody supplied become unrepairable ``Gap`` records (never invented candles),
  returned by ``resolve_gap`` so downstream can reset indicator state.
* At most ``max_pending`` waiting candles per symbol; beyond that the newest are dropped
  and counted (``overflow``): the hole they leave is found and repaired like any gap
  once a newer candle of that symbol arrives.
* ``set_symbols`` changes what is accepted from then on; a removed symbol's waiting
  candles still drain.

Counters (``counters``, all cumulative except the two gauges): received (offered and
repair rows), rejected (by validation), emitted, duplicates, revisions, out_of_order,
overflow, gaps_detected, gaps_repaired (every missing minute supplied),
gaps_unrepairable (at least one minute left missing), candles_repaired (rows emitted
from inside gaps), candles_unrepairable (minutes left missing), repair_ignored (repair
rows of another symbol or outside the gap); gauges ``held`` (waiting behind an open
gap) and ``pending``; ``quarantined`` maps reason -> count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.market.schema import CANDLE_SCHEMA, PRICE_COLUMNS
from orchestrator.market.timeframes import timeframe_ms
from orchestrator.market.validate import (
    FUTURE_TOLERANCE_MS,
    Quarantine,
    Reason,
    Rejects,
    table_to_batch,
    validate_candles,
)

# Exchanges publish the final version of a candle within a second or two of its close;
# a few seconds more covers REST polling and clock skew.
DEFAULT_GRACE_MS = 5_000
# One day of 1m candles held behind an unresolved gap, per symbol.
DEFAULT_MAX_PENDING = 1_440
# Unrepairable holes remembered per symbol to tell a late filler from a duplicate.
HOLES_PER_SYMBOL = 64
NO_TIME = np.iinfo(np.int64).min
_VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")
_COUNTERS = (
    "received", "rejected", "emitted", "duplicates", "revisions", "out_of_order",
    "overflow", "gaps_detected", "gaps_repaired", "gaps_unrepairable",
    "candles_repaired", "candles_unrepairable", "repair_ignored",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing open times ``start_ms, start_ms + tf, ..., end_ms - tf`` of one symbol."""

    exchange: str
    symbol: str
    timeframe: str
    start_ms: int
    end_ms: int

    @property
    def missing_open_times(self) -> np.ndarray:
        return np.arange(self.start_ms, self.end_ms, timeframe_ms(self.timeframe), dtype=np.int64)

    @property
    def n_missing(self) -> int:
        return (self.end_ms - self.start_ms) // timeframe_ms(self.timeframe)


class GapResolution(NamedTuple):
    candles: pa.RecordBatch
    unrepairable: tuple[Gap, ...]


class CandleGate:
    """Per-symbol exactly-once gate over 1m (or any timeframe) candle batches."""

    def __init__(
        self,
        exchange: str,
        timeframe: str = "1m",
        *,
        grace_ms: int = DEFAULT_GRACE_MS,
        max_pending: int = DEFAULT_MAX_PENDING,
        symbols: Iterable[str] | None = None,
        future_tolerance_ms: int = FUTURE_TOLERANCE_MS,
        quarantine_size: int = 1000,
        max_unrepairable_kept: int = 256,
    ) -> None:
        if grace_ms < 0 or max_pending < 1:
            raise ValueError(f"need grace_ms >= 0 and max_pending >= 1: {grace_ms}, {max_pending}")
        self.exchange, self.timeframe, self.tf_ms = exchange, timeframe, timeframe_ms(timeframe)
        self.grace_ms, self.max_pending = grace_ms, max_pending
        self.future_tolerance_ms = future_tolerance_ms
        self.allowed_symbols: frozenset[str] | None = None
        self.set_symbols(symbols)
        self.quarantine = Quarantine(quarantine_size)
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        self._last = np.empty(0, dtype=np.int64)  # last emitted (or accounted) open time
        self._first = np.empty(0, dtype=np.int64)  # first emitted open time
        self._names_array = pa.array([], pa.string())
        self._name_rank = np.empty(0, dtype=np.int64)
        self._gaps: dict[int, Gap] = {}  # the open gap per symbol id
        self._untaken: list[Gap] = []
        self._holes: dict[int, deque[tuple[int, int]]] = {}
        self._unrepairable: deque[Gap] = deque(maxlen=max_unrepairable_kept)
        self._set_pending(CANDLE_SCHEMA.empty_table(), _ints(), _ints())

    # --- public API ---------------------------------------------------------------------

    def set_symbols(self, symbols: Iterable[str] | None) -> None:
        """Restrict accepted symbols (None: any non-empty symbol); takes effect at once."""
        self.allowed_symbols = None if symbols is None else frozenset(symbols)

    def forget(self, symbols: Iterable[str]) -> None:
        """Drop everything known of ``symbols`` (removed from the feed): their waiting
        candles, open gaps and holes, and their last emitted time, so a symbol added again
        later starts afresh with its warm-up history instead of being refused as late."""
        ids = [self._ids[s] for s in symbols if s in self._ids]
        if not ids:
            return
        self._last[ids] = NO_TIME
        self._first[ids] = NO_TIME
        for sid in ids:
            self._gaps.pop(sid, None)
            self._holes.pop(sid, None)
        gone = set(symbols)
        self._untaken = [g for g in self._untaken if g.symbol not in gone]
        keep = ~np.isin(self._p_sym, ids)
        self._set_pending(
            self._pending.filter(pa.array(keep)), self._p_sym[keep], self._p_time[keep]
        )

    def offer(self, batch: pa.RecordBatch | pa.Table, now_ms: int) -> pa.RecordBatch:
        """Take new (possibly provisional, repeated, shuffled) candles; return final ones."""
        valid = self._validate(batch, now_ms)
        sym, time = self._symbol_ids(valid), _open_times(valid)
        fresh = self._drop_late(valid, sym, time)
        if not fresh.all():
            valid, sym, time = valid.filter(pa.array(fresh)), sym[fresh], time[fresh]
        self._merge(valid, sym, time)
        released = self._release(now_ms)
        self._enforce_bound()
        return self._as_output(released)

    def flush(self, now_ms: int) -> pa.RecordBatch:
        """Candles whose period and grace have ended by ``now_ms`` (no new input)."""
        return self._as_output(self._release(now_ms))

    def take_gaps(self) -> list[Gap]:
        gaps, self._untaken = self._untaken, []
        return gaps

    def resolve_gap(
        self, gap: Gap, repaired: pa.RecordBatch | pa.Table | None, now_ms: int
    ) -> GapResolution:
        """Fill ``gap`` with ``repaired`` candles, mark what is still missing, release held."""
        sid = self._ids.get(gap.symbol)
        if sid is None or self._gaps.get(sid) != gap:
            return GapResolution(self._as_output(self._empty()), ())
        if repaired is not None:
            table, sym, time = self._repair_rows(gap, sid, repaired, now_ms)
            self._merge(table, sym, time)
        filled, holes = self._close_gap(gap, sid)
        released = self._release(now_ms)
        self._enforce_bound()
        return GapResolution(self._as_output(pa.concat_tables([filled, released])), holes)

    @property
    def open_gaps(self) -> tuple[Gap, ...]:
        return tuple(self._gaps.values())

    @property
    def unrepairable(self) -> list[Gap]:
        return list(self._unrepairable)

    def last_emitted(self, symbol: str) -> int | None:
        sid = self._ids.get(symbol)
        return None if sid is None or self._last[sid] == NO_TIME else int(self._last[sid])

    @property
    def counters(self) -> dict:
        held_ids = np.isin(self._p_sym, list(self._gaps)) if self._gaps else None
        return {
            **self._counts,
            "held": 0 if held_ids is None else int(held_ids.sum()),
            "pending": len(self._p_time),
            "quarantined": self.quarantine.counts,
        }

    def status(self) -> dict:
        return {
            "exchange": self.exchange,
            "timeframe": self.timeframe,
            "symbols": len(self._names),
            **self.counters,
            "open_gaps": [asdict(g) for g in self._gaps.values()],
            "recent_unrepairable": [asdict(g) for g in self._unrepairable],
        }

    # --- intake -------------------------------------------------------------------------

    def _validate(self, batch: pa.RecordBatch | pa.Table, now_ms: int | None) -> pa.Table:
        valid, rejects = validate_candles(
            batch,
            timeframe=self.timeframe,
            now_ms=now_ms,
            exchange=self.exchange,
            symbols=self.allowed_symbols,
            future_tolerance_ms=self.future_tolerance_ms,
        )
        self._counts["received"] += valid.num_rows + len(rejects)
        if len(rejects):
            self._counts["rejected"] += len(rejects)
            self.quarantine.add(rejects)
        return valid if isinstance(valid, pa.Table) else pa.Table.from_batches([valid])

    def _symbol_ids(self, table: pa.Table) -> np.ndarray:
        """Symbol id per row (registering new symbols), by one vectorized hash lookup."""
        if table.num_rows == 0:
            return _ints(np.int32)
        column = table.column("symbol")
        ids = pc.index_in(column, value_set=self._names_array)
        if ids.null_count:
            self._register(pc.unique(column.filter(ids.is_null())).to_pylist())
            ids = pc.index_in(column, value_set=self._names_array)
        return ids.to_numpy().astype(np.int32)

    def _register(self, names: list[str]) -> None:
        """Give new symbols the next ids, with no emitted candle yet."""
        for name in names:
            self._ids[name] = len(self._names)
            self._names.append(name)
        missing = np.full(len(self._names) - len(self._last), NO_TIME, dtype=np.int64)
        self._last = np.concatenate([self._last, missing])
        self._first = np.concatenate([self._first, missing])
        self._names_array = pa.array(self._names, pa.string())
        self._name_rank = _ranks(self._names)

    def _drop_late(self, table: pa.Table, sym: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Count and drop candles at or before their symbol's last emitted one."""
        late = time <= self._last[sym]
        if not late.any():
            return ~late
        outside = (time < self._first[sym]) | self._in_holes(sym, time, late)
        out_of_order = late & outside
        self._counts["duplicates"] += int((late & ~outside).sum())
        if out_of_order.any():
            self._counts["out_of_order"] += int(out_of_order.sum())
            rows = table.filter(pa.array(out_of_order))
            self.quarantine.add(Rejects.of(rows, Reason.OUT_OF_ORDER))
        return ~late

    def _in_holes(self, sym: np.ndarray, time: np.ndarray, late: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(time), dtype=bool)
        for sid in np.unique(sym[late]):
            for start, end in self._holes.get(int(sid), ()):
                mask |= (sym == sid) & (time >= start) & (time < end)
        return mask

    def _repair_rows(self, gap: Gap, sid: int, repaired, now_ms: int):
        """Valid repaired rows of the gap's symbol inside the gap; the rest are ignored."""
        table = self._validate(repaired, now_ms)
        time = _open_times(table)
        symbol = pc.equal(table.column("symbol"), gap.symbol)
        inside = _to_bool(symbol) & (time >= gap.start_ms) & (time < gap.end_ms)
        self._counts["repair_ignored"] += int((~inside).sum())
        table = table.filter(pa.array(inside))
        return table, np.full(table.num_rows, sid, dtype=np.int32), time[inside]

    # --- pending store ------------------------------------------------------------------

    def _set_pending(self, table: pa.Table, sym: np.ndarray, time: np.ndarray) -> None:
        """Pending rows, sorted by (symbol id, open time), one row per key."""
        self._pending, self._p_sym, self._p_time = table, sym, time

    def _merge(self, table: pa.Table, sym: np.ndarray, time: np.ndarray) -> None:
        """Add rows to pending; for a repeated (symbol, open time) the later row wins."""
        if table.num_rows == 0:
            return
        combined = pa.concat_tables([self._pending, table])
        sym = np.concatenate([self._p_sym, sym])
        time = np.concatenate([self._p_time, time])
        order = np.lexsort((time, sym))  # stable: a later row stays after an earlier one
        sym, time = sym[order], time[order]
        superseded = (sym[:-1] == sym[1:]) & (time[:-1] == time[1:])
        if superseded.any():
            self._count_replacements(combined, order, superseded)
        keep = np.append(~superseded, True)
        self._set_pending(combined.take(order[keep]), sym[keep], time[keep])

    def _count_replacements(self, table: pa.Table, order: np.ndarray, superseded) -> None:
        old, new = order[:-1][superseded], order[1:][superseded]
        changed = np.zeros(len(old), dtype=bool)
        for name in _VALUE_COLUMNS:
            values = table.column(name).to_numpy()
            changed |= values[old] != values[new]
        self._counts["revisions"] += int(changed.sum())
        self._counts["duplicates"] += int((~changed).sum())

    def _enforce_bound(self) -> None:
        """Keep the oldest ``max_pending`` rows per symbol; newer ones are re-fetched later.

        Applied after release, so only candles that could not be emitted count."""
        rank = _rank_in_group(_group_starts(self._p_sym))
        overflow = rank >= self.max_pending
        if overflow.any():
            self._counts["overflow"] += int(overflow.sum())
            self._keep_pending(~overflow)

    def _keep_pending(self, keep: np.ndarray) -> None:
        table = self._pending.filter(pa.array(keep))
        self._set_pending(table, self._p_sym[keep], self._p_time[keep])

    # --- release ------------------------------------------------------------------------

    def _release(self, now_ms: int) -> pa.Table:
        """Emit each symbol's leading run of final, contiguous pending candles."""
        sym, time = self._p_sym, self._p_time
        if len(time) == 0:
            return self._empty()
        starts = _group_starts(sym)
        ends = np.append(starts[1:], True)
        final = ~ends | (time + (self.tf_ms + self.grace_ms) <= now_ms)
        last = self._last[sym]
        prev = np.where(starts, last, np.concatenate([[NO_TIME], time[:-1]]))
        contiguous = (starts & (last == NO_TIME)) | (time - prev == self.tf_ms)
        open_ok = ~self._blocked()[sym]
        emit = _leading_run(final & contiguous & open_ok, starts)
        self._detect_gaps(emit, starts, final & ~contiguous & open_ok, prev)
        return self._emit(emit, starts & (last == NO_TIME))

    def _blocked(self) -> np.ndarray:
        blocked = np.zeros(len(self._names), dtype=bool)
        blocked[list(self._gaps)] = True
        return blocked

    def _detect_gaps(self, emit, starts, gap_after, prev) -> None:
        """A group's first unemitted row that is final but not contiguous opens a gap."""
        first_unemitted = ~emit & (starts | np.append(False, emit[:-1]))
        for i in np.flatnonzero(first_unemitted & gap_after):
            sid = int(self._p_sym[i])
            self._open_gap(sid, int(prev[i]) + self.tf_ms, int(self._p_time[i]))

    def _open_gap(self, sid: int, start_ms: int, end_ms: int) -> None:
        gap = Gap(self.exchange, self._names[sid], self.timeframe, start_ms, end_ms)
        self._gaps[sid] = gap
        self._untaken.append(gap)
        self._counts["gaps_detected"] += 1

    def _emit(self, emit: np.ndarray, first_of_symbol: np.ndarray) -> pa.Table:
        if not emit.any():
            return self._empty()
        sym, time = self._p_sym[emit], self._p_time[emit]
        np.maximum.at(self._last, sym, time)
        starters = emit & first_of_symbol
        self._first[self._p_sym[starters]] = self._p_time[starters]
        rows = self._pending.filter(pa.array(emit))
        self._keep_pending(~emit)
        self._counts["emitted"] += rows.num_rows
        return rows

    def _close_gap(self, gap: Gap, sid: int) -> tuple[pa.Table, tuple[Gap, ...]]:
        """Emit every pending row inside the gap and record the minutes still missing."""
        inside = (self._p_sym == sid) & (self._p_time >= gap.start_ms)
        inside &= self._p_time < gap.end_ms
        holes = self._record_holes(gap, sid, self._p_time[inside])
        rows = self._pending.filter(pa.array(inside))
        self._keep_pending(~inside)
        self._last[sid] = gap.end_ms - self.tf_ms
        del self._gaps[sid]
        self._untaken = [g for g in self._untaken if g != gap]
        self._counts["emitted"] += rows.num_rows
        self._counts["candles_repaired"] += rows.num_rows
        return rows, holes

    def _record_holes(self, gap: Gap, sid: int, supplied: np.ndarray) -> tuple[Gap, ...]:
        expected = gap.missing_open_times
        missing = expected[~np.isin(expected, supplied)]
        holes = tuple(
            Gap(gap.exchange, gap.symbol, gap.timeframe, start, end)
            for start, end in _runs(missing, self.tf_ms)
        )
        self._counts["gaps_repaired" if not holes else "gaps_unrepairable"] += 1
        self._counts["candles_unrepairable"] += len(missing)
        self._unrepairable.extend(holes)
        kept = self._holes.setdefault(sid, deque(maxlen=HOLES_PER_SYMBOL))
        kept.extend((h.start_ms, h.end_ms) for h in holes)
        return holes

    # --- output -------------------------------------------------------------------------

    def _empty(self) -> pa.Table:
        return CANDLE_SCHEMA.empty_table()

    def _as_output(self, rows: pa.Table) -> pa.RecordBatch:
        """One batch ordered by (open_time, symbol)."""
        if rows.num_rows > 1:
            rank = self._name_rank[self._symbol_ids(rows)]
            rows = rows.take(np.lexsort((rank, _open_times(rows))))
        return table_to_batch(rows)

    # --- snapshot -----------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Plain picklable state; ``from_snapshot`` rebuilds an equivalent gate."""
        return {
            "version": 1,
            "config": self._config(),
            "symbols": list(self._names),
            "last_emitted": _optional_ints(self._last),
            "first_emitted": _optional_ints(self._first),
            "open_gaps": [asdict(g) for g in self._gaps.values()],
            "holes": {self._names[s]: [list(h) for h in kept] for s, kept in self._holes.items()},
            "unrepairable": [asdict(g) for g in self._unrepairable],
            "counters": dict(self._counts),
            "quarantine": self.quarantine.snapshot(),
            "pending": self._pending.to_pydict(),
        }

    def _config(self) -> dict:
        symbols = self.allowed_symbols
        return {
            "exchange": self.exchange,
            "timeframe": self.timeframe,
            "grace_ms": self.grace_ms,
            "max_pending": self.max_pending,
            "symbols": None if symbols is None else sorted(symbols),
            "future_tolerance_ms": self.future_tolerance_ms,
            "quarantine_size": self.quarantine.max_records,
            "max_unrepairable_kept": self._unrepairable.maxlen,
        }

    @classmethod
    def from_snapshot(cls, snapshot: dict) -> CandleGate:
        if snapshot.get("version") != 1:
            raise ValueError(f"unsupported CandleGate snapshot version {snapshot.get('version')!r}")
        config = dict(snapshot["config"])
        gate = cls(config.pop("exchange"), config.pop("timeframe"), **config)
        gate._register(snapshot["symbols"])
        gate._last[:] = _from_optional(snapshot["last_emitted"])
        gate._first[:] = _from_optional(snapshot["first_emitted"])
        gate._restore_gaps(snapshot)
        gate._counts.update(snapshot["counters"])
        gate.quarantine = Quarantine.from_snapshot(snapshot["quarantine"])
        pending = pa.Table.from_pydict(snapshot["pending"], schema=CANDLE_SCHEMA)
        gate._set_pending(pending, gate._symbol_ids(pending), _open_times(pending))
        return gate

    def _restore_gaps(self, snapshot: dict) -> None:
        for record in snapshot["open_gaps"]:
            gap = Gap(**record)
            self._gaps[self._ids[gap.symbol]] = gap
            self._untaken.append(gap)
        for name, kept in snapshot["holes"].items():
            holes = deque((tuple(h) for h in kept), maxlen=HOLES_PER_SYMBOL)
            self._holes[self._ids[name]] = holes
        self._unrepairable.extend(Gap(**g) for g in snapshot["unrepairable"])


# --- array helpers ------------------------------------------------------------------------


def _ints(dtype=np.int64) -> np.ndarray:
    return np.empty(0, dtype=dtype)


def _open_times(table: pa.Table) -> np.ndarray:
    return table.column("open_time").to_numpy().astype(np.int64, copy=False)


def _to_bool(result) -> np.ndarray:
    return pc.fill_null(result, False).to_numpy(zero_copy_only=False)


def _ranks(names: list[str]) -> np.ndarray:
    """Position of each symbol id in name order (for (open_time, symbol) output order)."""
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names))
    return rank


def _group_starts(sym: np.ndarray) -> np.ndarray:
    """True where a run of equal symbol ids begins (``sym`` sorted by id)."""
    return np.concatenate([[True], sym[1:] != sym[:-1]]) if len(sym) else np.zeros(0, bool)


def _rank_in_group(starts: np.ndarray) -> np.ndarray:
    index = np.arange(len(starts))
    return index - np.maximum.accumulate(np.where(starts, index, 0))


def _leading_run(ready: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Rows of each group before its first not-``ready`` row."""
    blocked = np.cumsum(~ready)
    group = np.cumsum(starts) - 1
    before_group = (blocked - ~ready)[starts]
    return blocked - before_group[group] == 0


def _runs(times: np.ndarray, step: int) -> list[tuple[int, int]]:
    """Sorted open times as [start, end) runs of consecutive periods."""
    if len(times) == 0:
        return []
    breaks = np.flatnonzero(np.diff(times) != step) + 1
    return [(int(r[0]), int(r[-1]) + step) for r in np.split(times, breaks)]


def _optional_ints(values: np.ndarray) -> list[int | None]:
    return [None if v == NO_TIME else int(v) for v in values.tolist()]


def _from_optional(values: list[int | None]) -> np.ndarray:
    return np.array([NO_TIME if v is None else v for v in values], dtype=np.int64)
