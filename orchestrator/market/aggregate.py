"""Incremental multi-timeframe aggregation of 1m candles, vectorized over symbols.

Each symbol owns a slot; every ``update`` receives at most one 1m candle per slot (arrays
aligned with the slots) and returns, for every configured timeframe, the candles whose
bucket completed with this minute. A bucket is emitted when its last minute arrives and
all its minutes were seen; a bucket with a missing minute is dropped and counted. The
batch twin is ``orchestrator.market.resample.resample``; both aggregate identically
(see there), and ``tests/unit/market/test_aggregate.py`` holds them to parity.

State lives in arrays shaped (field, timeframe, slot), so one numpy operation advances
every timeframe of every symbol at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.market.schema import OPTIONAL_COLUMNS, candles_from_columns
from orchestrator.market.timeframes import MINUTE_MS, timeframe_ms

DEFAULT_TIMEFRAMES = ("5m", "15m", "30m", "1h", "4h", "1d")
VALUE_COLUMNS = ("open", "high", "low", "close", "volume", *OPTIONAL_COLUMNS)
_OPEN, _HIGH, _LOW, _CLOSE, _FIRST_SUM = range(5)
_NO_BUCKET = -1
SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class CompletedCandles:
    """Candles of one timeframe completed by one update, as arrays aligned with ``slots``.

    ``values`` holds every name in ``VALUE_COLUMNS`` as float64; NaN in an optional
    column means null (trade counts are exact as floats below 2**53).
    """

    timeframe: str
    slots: np.ndarray
    open_time: np.ndarray
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.slots)

    def to_candles(self, exchange: str | Sequence[str], symbols: Sequence[str]) -> pa.Table:
        """As a ``CANDLE_SCHEMA`` table; ``symbols`` (and a per-slot ``exchange``) by slot."""
        if not isinstance(exchange, str):
            exchange = pa.array(np.asarray(exchange, dtype=object)[self.slots], pa.string())
        return candles_from_columns(
            exchange=exchange,
            symbol=pa.array(np.asarray(symbols, dtype=object)[self.slots], pa.string()),
            timeframe=self.timeframe,
            open_time=self.open_time,
            columns=self.values,
        )


def concat_completed(parts: Sequence[CompletedCandles], timeframe: str) -> CompletedCandles:
    """Many updates' completions of one timeframe as one (cheaper than a table per update)."""
    if not parts:
        return _no_candles(timeframe)
    return CompletedCandles(
        timeframe,
        np.concatenate([p.slots for p in parts]),
        np.concatenate([p.open_time for p in parts]),
        {name: np.concatenate([p.values[name] for p in parts]) for name in VALUE_COLUMNS},
    )


class TimeframeAggregator:
    """Streams 1m candles of ``n_slots`` symbols into several higher timeframes at once."""

    def __init__(self, n_slots: int, timeframes: Sequence[str] = DEFAULT_TIMEFRAMES):
        self.timeframes = tuple(timeframes)
        self.n_slots = int(n_slots)
        self._steps = np.array([_checked_step(tf) for tf in self.timeframes], np.int64)[:, None]
        self._ratios = self._steps // MINUTE_MS
        shape = (len(self.timeframes), self.n_slots)
        self._bucket = np.full(shape, _NO_BUCKET, dtype=np.int64)
        self._filled = np.zeros(shape, dtype=np.int64)  # minutes seen in the open bucket
        self._values = np.zeros((len(VALUE_COLUMNS), *shape), dtype=np.float64)
        self._last_time = np.full(self.n_slots, -1, dtype=np.int64)
        self._dropped = np.zeros(shape, dtype=np.int64)  # buckets lost to a missing minute
        self._rejected = np.zeros(self.n_slots, dtype=np.int64)  # stale, repeated, misaligned
        self._nothing_completed = {tf: _no_candles(tf) for tf in self.timeframes}

    def update(
        self,
        open_time: int | np.ndarray,
        columns: Mapping[str, np.ndarray],
        present: np.ndarray | None = None,
    ) -> dict[str, CompletedCandles]:
        """Fold one 1m candle per present slot in; return what completed, per timeframe.

        ``open_time`` is one epoch-ms minute for all slots or an array per slot;
        ``columns`` maps open/high/low/close/volume (and any optional column; absent ones
        are null) to arrays of length ``n_slots``; ``present`` marks the slots that have a
        candle (default: all). A candle not newer than its slot's last one, or not on a
        minute boundary, is rejected and counted.
        """
        times = np.broadcast_to(np.asarray(open_time, dtype=np.int64), (self.n_slots,))
        idx = self._accepted_slots(times, present)
        minute = times[idx]
        incoming = _stack_columns(columns, idx, self.n_slots)
        bucket = minute - minute % self._steps
        starts_bucket = bucket != self._bucket[:, idx]
        self._dropped[:, idx] += starts_bucket & (self._filled[:, idx] > 0)
        values = _merge(self._values[:, :, idx], incoming, starts_bucket)
        filled = np.where(starts_bucket, 1, self._filled[:, idx] + 1)
        is_last_minute = minute == bucket + self._steps - MINUTE_MS
        complete = is_last_minute & (filled == self._ratios)
        self._dropped[:, idx] += is_last_minute & ~complete
        self._bucket[:, idx], self._values[:, :, idx] = bucket, values
        self._filled[:, idx] = np.where(is_last_minute, 0, filled)  # 0: closed, nothing open
        self._last_time[idx] = minute
        return self._completed(complete, idx, bucket, values)

    def open_bucket(
        self,
        timeframe: str,
        slots: np.ndarray,
        start_ms: int,
        through_ms: int,
        columns: Mapping[str, np.ndarray],
    ) -> None:
        """Open ``timeframe``'s bucket at ``start_ms`` for ``slots`` as though its 1m candles
        up to ``through_ms`` had been folded in, their aggregate given by ``columns`` (one
        value per slot): an exchange's in-progress candle of that timeframe, taken at
        start, so the first close after it is complete instead of dropped. The next 1m
        candle of each slot is then the one after ``through_ms``."""
        step = _checked_step(timeframe)
        if start_ms % step or not start_ms <= through_ms < start_ms + step - MINUTE_MS:
            raise ValueError(
                f"an open {timeframe} bucket starts on its boundary and ends before its "
                f"last minute: got {start_ms}..{through_ms}"
            )
        if through_ms % MINUTE_MS:
            raise ValueError("through_ms must be a minute")
        k, slots = self.timeframes.index(timeframe), np.asarray(slots, dtype=np.int64)
        self._bucket[k, slots] = start_ms
        self._filled[k, slots] = (through_ms - start_ms) // MINUTE_MS + 1
        self._values[:, k, slots] = _stack_columns(columns, slice(None), len(slots))
        self._last_time[slots] = np.maximum(self._last_time[slots], through_ms)

    def resize(self, n_slots: int) -> None:
        """Grow to ``n_slots`` (symbols added while running); new slots start empty."""
        grown = TimeframeAggregator(n_slots, self.timeframes)
        for name in _STATE_ARRAYS:
            old, new = getattr(self, f"_{name}"), getattr(grown, f"_{name}")
            new[..., : self.n_slots] = old
            setattr(self, f"_{name}", new)
        self.n_slots = int(n_slots)

    def drop_slots(self, slots: Sequence[int] | np.ndarray) -> None:
        """Remove ``slots`` with their state and counters; later slots move down in order."""
        for name in _STATE_ARRAYS:
            setattr(self, f"_{name}", np.delete(getattr(self, f"_{name}"), slots, axis=-1))
        self.n_slots = len(self._last_time)

    def reset_symbols(self, slots: Sequence[int] | np.ndarray) -> None:
        """Forget the open buckets of ``slots`` (after an unrepairable gap or a restart).

        Their partial buckets count as dropped; the next candle of each slot is accepted
        whatever its time, so a slot may restart from an earlier minute.
        """
        slots = np.asarray(slots, dtype=np.int64)
        self._dropped[:, slots] += self._filled[:, slots] > 0
        self._bucket[:, slots] = _NO_BUCKET
        self._filled[:, slots] = 0
        self._last_time[slots] = -1

    def status(self) -> dict:
        """Plain counters: buckets dropped per timeframe, candles rejected."""
        dropped = self._dropped.sum(axis=1)
        return {
            "dropped_buckets": {tf: int(n) for tf, n in zip(self.timeframes, dropped, strict=True)},
            "rejected_candles": int(self._rejected.sum()),
        }

    def snapshot(self) -> dict:
        """The whole state as a dict of copies (numpy arrays and plain values): picklable."""
        return {
            "version": SNAPSHOT_VERSION,
            "timeframes": list(self.timeframes),
            "n_slots": self.n_slots,
            **{name: getattr(self, f"_{name}").copy() for name in _STATE_ARRAYS},
        }

    @classmethod
    def from_snapshot(cls, snapshot: Mapping) -> TimeframeAggregator:
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"aggregator snapshot version {snapshot.get('version')!r} unsupported")
        aggregator = cls(snapshot["n_slots"], snapshot["timeframes"])
        for name in _STATE_ARRAYS:
            target = getattr(aggregator, f"_{name}")
            source = np.asarray(snapshot[name], dtype=target.dtype)
            if source.shape != target.shape:
                raise ValueError(
                    f"snapshot field {name!r} has shape {source.shape}, not {target.shape}"
                )
            target[...] = source
        return aggregator

    def _accepted_slots(self, times: np.ndarray, present: np.ndarray | None) -> np.ndarray | slice:
        offered = np.ones(self.n_slots, bool) if present is None else np.asarray(present, bool)
        accepted = offered & (times > self._last_time) & (times % MINUTE_MS == 0)
        self._rejected += offered & ~accepted
        idx = np.flatnonzero(accepted)
        return slice(None) if len(idx) == self.n_slots else idx  # a slice avoids gathers

    def _completed(
        self, complete: np.ndarray, idx: np.ndarray | slice, bucket: np.ndarray, values: np.ndarray
    ) -> dict[str, CompletedCandles]:
        """Gather every completed bucket in one indexing step, then cut it per timeframe."""
        which_tf, which = np.nonzero(complete)  # row-major: grouped by timeframe
        if len(which) == 0:
            return dict(self._nothing_completed)  # callers may mutate their dict
        slots = np.arange(self.n_slots)[idx][which]
        times, gathered = bucket[which_tf, which], values[:, which_tf, which]
        cuts = np.searchsorted(which_tf, np.arange(len(self.timeframes) + 1))
        out = {}
        for k, timeframe in enumerate(self.timeframes):
            part = slice(cuts[k], cuts[k + 1])
            columns = dict(zip(VALUE_COLUMNS, gathered[:, part], strict=True))
            out[timeframe] = CompletedCandles(timeframe, slots[part], times[part], columns)
        return out


_STATE_ARRAYS = ("bucket", "filled", "values", "last_time", "dropped", "rejected")


def _no_candles(timeframe: str) -> CompletedCandles:
    empty = np.empty(0, dtype=np.float64)
    columns = {name: empty for name in VALUE_COLUMNS}
    return CompletedCandles(timeframe, np.empty(0, np.int64), np.empty(0, np.int64), columns)


def _checked_step(timeframe: str) -> int:
    step = timeframe_ms(timeframe)
    if step <= MINUTE_MS or step % MINUTE_MS:
        raise ValueError(
            f"aggregated timeframe must be a multiple of 1m above it, got {timeframe!r}"
        )
    return step


def _stack_columns(columns: Mapping[str, np.ndarray], idx, n_slots: int) -> np.ndarray:
    """Incoming values as (field, slot) float64; absent optional columns are NaN (null)."""
    missing = [name for name in VALUE_COLUMNS[: _FIRST_SUM + 1] if name not in columns]
    if missing:
        raise ValueError(f"aggregator update lacks column(s) {missing}")
    stacked = np.full((len(VALUE_COLUMNS), n_slots), np.nan)
    for j, name in enumerate(VALUE_COLUMNS):
        if columns.get(name) is not None:
            stacked[j] = columns[name]
    return stacked[:, idx]


def _merge(old: np.ndarray, incoming: np.ndarray, starts_bucket: np.ndarray) -> np.ndarray:
    """Fold one minute into (field, timeframe, slot) values; a new bucket starts afresh."""
    merged = np.empty_like(old)
    merged[_OPEN] = np.where(starts_bucket, incoming[_OPEN], old[_OPEN])
    merged[_HIGH] = np.where(
        starts_bucket, incoming[_HIGH], np.maximum(old[_HIGH], incoming[_HIGH])
    )
    merged[_LOW] = np.where(starts_bucket, incoming[_LOW], np.minimum(old[_LOW], incoming[_LOW]))
    merged[_CLOSE] = incoming[_CLOSE]
    sums = incoming[_FIRST_SUM:, None, :]
    merged[_FIRST_SUM:] = np.where(starts_bucket, sums, old[_FIRST_SUM:] + sums)  # NaN sticks
    return merged


# --- feeding from candle tables ------------------------------------------------------------


@dataclass(frozen=True)
class MinuteInput:
    """The arguments of one ``TimeframeAggregator.update`` call."""

    open_time: int
    columns: dict[str, np.ndarray]
    present: np.ndarray


def iter_minutes(
    candles: pa.Table, slot_of: Mapping[str, int], n_slots: int
) -> Iterator[MinuteInput]:
    """Split 1m candles (several symbols, any order) into per-minute slot-aligned inputs.

    ``slot_of`` maps each symbol to its slot; a symbol missing from it is a KeyError.
    (symbol, open_time) should be unique: of repeated rows, the last one is used.
    Minutes come out in time order, one call per distinct open time.
    """
    slots = _slots_of(candles.column("symbol"), slot_of)
    open_time = candles.column("open_time").to_numpy()
    order = np.argsort(open_time, kind="stable")
    slots, open_time = slots[order], open_time[order]
    arrays = {name: _float_column(candles, name)[order] for name in VALUE_COLUMNS}
    bounds = np.flatnonzero(np.diff(open_time)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(open_time)], strict=True):
        yield _minute_input(int(open_time[lo]), slots[lo:hi], arrays, slice(lo, hi), n_slots)


def _slots_of(symbols: pa.ChunkedArray, slot_of: Mapping[str, int]) -> np.ndarray:
    encoded = symbols.combine_chunks().dictionary_encode()
    lookup = np.array([slot_of[s] for s in encoded.dictionary.to_pylist()], dtype=np.int64)
    return lookup[encoded.indices.to_numpy()]


def _float_column(candles: pa.Table, name: str) -> np.ndarray:
    return pc.cast(candles.column(name), pa.float64()).to_numpy()


def _minute_input(
    open_time: int, slots: np.ndarray, arrays: dict, rows: slice, n_slots: int
) -> MinuteInput:
    present = np.zeros(n_slots, dtype=bool)
    present[slots] = True
    columns = {}
    for name, values in arrays.items():
        column = np.full(n_slots, np.nan)
        column[slots] = values[rows]
        columns[name] = column
    return MinuteInput(open_time, columns, present)
