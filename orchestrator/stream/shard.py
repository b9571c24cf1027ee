"""The state of one feature shard: candles in, one feature matrix per timeframe tick out.

1m candles update the 1m features directly and feed a multi-timeframe aggregator; every
higher-timeframe candle it completes updates that timeframe's features. All state lives
in numpy arrays indexed by one slot per symbol, identical across timeframes, and the whole
shard snapshots to plain data so a restarted shard continues bit for bit.
Pure (no Ray): the FeatureShard actor is a thin shell around this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from orchestrator.features import IncrementalFeatures, warm_rows
from orchestrator.market.aggregate import VALUE_COLUMNS, CompletedCandles, TimeframeAggregator
from orchestrator.market.timeframes import run_bounds
from orchestrator.stream.history import CandleHistory
from orchestrator.stream.keyindex import KeyIndex

SNAPSHOT_VERSION = 1
OHLCV = ("open", "high", "low", "close", "volume")
# A warm-up folds only a new series' newest this-many 1m candles into its 1m features: every
# windowed feature reads fewer, and the seeded averages (slowest decay 25/27 per candle)
# weigh anything older by less than 1e-16. The higher timeframes still get every candle.
WARM_ONE_MINUTE = 500


@dataclass(frozen=True)
class FeatureTick:
    """Warm feature rows of every symbol whose ``timeframe`` candle closed at ``open_time``."""

    timeframe: str
    exchange: np.ndarray
    symbol: np.ndarray
    open_time: np.ndarray
    close: np.ndarray  # the closing price of each row's candle (a return becomes a price)
    high: np.ndarray
    low: np.ndarray
    features: np.ndarray  # (n, len(FEATURE_NAMES)), every required feature finite
    cold: int  # rows that closed but were still warming up


class ShardState:
    def __init__(self, timeframes: tuple[str, ...] = ("1m",), chart_candles: int = 0):
        self.timeframes = tuple(timeframes)
        self.engines = {tf: IncrementalFeatures() for tf in self.timeframes}
        # Recent candles for charts (GET /v1/candles); not part of the snapshot.
        self.history = (
            {tf: CandleHistory(tf, chart_candles) for tf in self.timeframes}
            if chart_candles
            else {}
        )
        higher = tuple(tf for tf in self.timeframes if tf != "1m")
        self.aggregator = TimeframeAggregator(0, higher) if higher else None
        self._index = KeyIndex(":")  # "exchange:symbol" per slot
        self.exchange = np.empty(0, dtype=object)
        self.symbol = np.empty(0, dtype=object)
        self.last_time = np.empty(0, dtype=np.int64)  # per slot: newest 1m open time processed
        self.candles_in = 0
        self.rejected_minutes = 0
        self.last_error = ""

    # --- symbols -----------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return self._index.keys

    def slots_for(self, exchange, symbol) -> np.ndarray:
        known = len(self._index)
        slots = self._index.slots(exchange, symbol)
        if len(self._index) > known:
            self._register()
        return slots

    def _register(self) -> None:
        self._index_keys()
        self.last_time = np.concatenate(
            [self.last_time, np.full(len(self.keys) - len(self.last_time), -1)]
        )
        for engine in self.engines.values():
            engine.add_symbols(self.keys)  # idempotent: slots stay equal across timeframes
        if self.aggregator is not None:
            self.aggregator.resize(len(self.keys))
        for history in self.history.values():
            history.resize(len(self.keys))

    def _index_keys(self) -> None:
        self.exchange, self.symbol = self._index.split(2)

    def _known_slots(self, exchange: str, symbols: list[str]) -> list[int]:
        slot_of = {k: i for i, k in enumerate(self.keys)}
        return sorted({slot_of[k] for k in (f"{exchange}:{s}" for s in symbols) if k in slot_of})

    def reset(self, exchange: str, symbols: list[str]) -> None:
        """Forget history of ``symbols`` (an unrepairable gap): they warm up again."""
        slots = self._known_slots(exchange, symbols)
        for engine in self.engines.values():
            engine.reset_symbols(slots)
        if self.aggregator is not None:
            self.aggregator.reset_symbols(slots)
        for history in self.history.values():
            history.forget(slots)

    def drop(self, exchange: str, symbols: list[str]) -> int:
        """Remove ``symbols`` (no longer streamed) from every part of the state, so neither
        memory nor checkpoints keep them; the other slots move down in order, and a dropped
        symbol that trades again is a new, cold one. Returns how many were held."""
        slots = self._known_slots(exchange, symbols)
        if not slots:
            return 0
        self._index.drop_slots(slots)
        self._index_keys()
        self.last_time = np.delete(self.last_time, slots)
        for engine in self.engines.values():
            engine.drop_slots(slots)
        if self.aggregator is not None:
            self.aggregator.drop_slots(slots)
        for history in self.history.values():
            history.drop_slots(slots)
        return len(slots)

    def candles(
        self, exchange: str, symbol: str, timeframe: str, limit: int | None = None
    ) -> dict[str, np.ndarray] | None:
        """The recent closed ``timeframe`` candles of a symbol, oldest first; None when this
        shard does not hold the series (or keeps no chart history)."""
        slot = self._index.find(f"{exchange}:{symbol}")
        if slot is None or timeframe not in self.history:
            return None
        return self.history[timeframe].read(slot, limit)

    # --- processing --------------------------------------------------------------------
    def process(self, batch: pa.RecordBatch | pa.Table) -> list[FeatureTick]:
        """Update features with ``batch`` (final 1m candles, time-ordered) and return its ticks.

        A symbol's candle at or before the last one it processed was seen already (a replay
        after a restore) and is skipped, so replaying overlapping batches is harmless.
        """
        return self._fold(batch, warm_up=False)

    def warm_up(self, batch: pa.RecordBatch | pa.Table) -> int:
        """Like ``process`` for history sent at start (nothing is predicted from it), at a
        fraction of the cost: a series the 1m features have not seen yet skips all but its
        newest ``WARM_ONE_MINUTE`` 1m candles there (they still build its higher timeframes,
        charts and position), which leaves its 1m features equal to a full fold within
        1e-15 relative and every other timeframe identical. Returns the candles consumed."""
        before = self.candles_in
        self._fold(batch, warm_up=True)
        return self.candles_in - before

    def _fold(self, batch: pa.RecordBatch | pa.Table, warm_up: bool) -> list[FeatureTick]:
        """Every minute of ``batch`` in time order; its ticks."""
        cols = _numpy_columns(batch)
        slots = self.slots_for(batch.column("exchange"), batch.column("symbol"))
        features_from = self._one_minute_start(slots, cols["open_time"]) if warm_up else None
        ticks: list[FeatureTick] = []
        bounds = run_bounds(cols["open_time"]).tolist()
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            part = {k: v[start:stop] for k, v in cols.items()}
            ticks.extend(self._minute(part, slots[start:stop], features_from))
        return ticks

    def _one_minute_start(self, slots: np.ndarray, open_time: np.ndarray) -> np.ndarray | None:
        """Per slot, the open time from which ``warm_up`` updates the 1m features: that of
        the series' ``WARM_ONE_MINUTE``-th newest candle in the batch when the 1m features
        have not seen the series yet (one they hold gets every candle: no gap folded in)."""
        if "1m" not in self.engines or not len(slots):
            return None
        start = np.full(len(self.keys), np.iinfo(np.int64).min, dtype=np.int64)
        order = np.lexsort((-open_time, slots))
        ordered = slots[order]
        first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        rank = np.arange(len(slots)) - np.repeat(first, np.diff(np.r_[first, len(slots)]))
        nth = order[rank == WARM_ONE_MINUTE - 1]
        start[slots[nth]] = open_time[nth]
        start[self.engines["1m"].candles_seen(range(len(self.keys))) > 0] = np.iinfo(np.int64).min
        return start

    def warm_timeframe(self, timeframe: str, batch: pa.RecordBatch | pa.Table) -> int:
        """Warm a higher timeframe's features with its own closed candles (an exchange's 1d
        klines, say), time-ordered and older than any 1m candle processed since: days of
        1m history are not needed to warm the 1d features. Returns the candles consumed."""
        if timeframe == "1m" or timeframe not in self.engines:
            raise ValueError(f"{timeframe!r} is not a higher timeframe of this shard")
        cols = _numpy_columns(batch)
        slots = self.slots_for(batch.column("exchange"), batch.column("symbol"))
        bounds = run_bounds(cols["open_time"]).tolist()
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            part = {k: v[start:stop] for k, v in cols.items()}
            self._features(timeframe, slots[start:stop], part["open_time"], part)
        return len(slots)

    def open_period(
        self, timeframe: str, batch: pa.RecordBatch | pa.Table, through_ms: int
    ) -> None:
        """Each symbol's in-progress ``timeframe`` candle (``open_time`` its period's start),
        covering its 1m candles up to ``through_ms``: with ``warm_timeframe`` before it, the
        timeframe's first live close predicts instead of being dropped as incomplete."""
        if self.aggregator is None or timeframe not in self.aggregator.timeframes:
            raise ValueError(f"{timeframe!r} is not a higher timeframe of this shard")
        cols = _numpy_columns(batch)
        starts = np.unique(cols["open_time"])
        if len(starts) != 1:
            raise ValueError("one open period at a time: every row's open_time must be equal")
        slots = self.slots_for(batch.column("exchange"), batch.column("symbol"))
        values = {k: v.astype(np.float64) for k, v in cols.items() if k in VALUE_COLUMNS}
        self.aggregator.open_bucket(timeframe, slots, int(starts[0]), through_ms, values)

    def _minute(
        self,
        cols: dict[str, np.ndarray],
        slots: np.ndarray,
        features_from: np.ndarray | None = None,
    ) -> list[FeatureTick]:
        fresh = cols["open_time"] > self.last_time[slots]
        if not fresh.all():
            cols, slots = {k: v[fresh] for k, v in cols.items()}, slots[fresh]
        if len(slots) == 0:
            return []
        self.candles_in += len(slots)
        self.last_time[slots] = cols["open_time"]
        ticks = []
        try:
            if "1m" in self.engines:
                ticks.extend(self._one_minute(cols, slots, features_from))
            if self.aggregator is not None:
                ticks.extend(self._higher_timeframes(slots, cols))
        except ValueError as exc:
            # The gate validated these candles, so this is a bug, not bad data: count it and
            # keep the shard alive rather than stop every symbol's predictions.
            self.rejected_minutes += 1
            self.last_error = str(exc)
        return [t for t in ticks if len(t.features) or t.cold]

    def _one_minute(
        self, cols: dict[str, np.ndarray], slots: np.ndarray, features_from: np.ndarray | None
    ) -> list[FeatureTick]:
        if features_from is None:
            return [self._features("1m", slots, cols["open_time"], cols)]
        used = cols["open_time"] >= features_from[slots]
        if "1m" in self.history and not used.all():  # charts show the skipped candles too
            self.history["1m"].write(
                slots[~used], cols["open_time"][~used], {k: v[~used] for k, v in cols.items()}
            )
        if not used.any():
            return []
        part = {k: v[used] for k, v in cols.items()}
        return [self._features("1m", slots[used], part["open_time"], part)]

    def _higher_timeframes(
        self, slots: np.ndarray, cols: dict[str, np.ndarray]
    ) -> list[FeatureTick]:
        assert self.aggregator is not None  # only called when there are higher timeframes
        n = self.aggregator.n_slots
        present = np.zeros(n, dtype=bool)
        present[slots] = True
        full = {}
        for name in (*OHLCV, "taker_buy_base"):
            column = np.full(n, np.nan)
            if name in cols:
                column[slots] = cols[name].astype(np.float64)
            full[name] = column
        completed = self.aggregator.update(int(cols["open_time"][0]), full, present)
        return [self._completed_tick(c) for c in completed.values() if len(c)]

    def _completed_tick(self, done: CompletedCandles) -> FeatureTick:
        return self._features(done.timeframe, done.slots, done.open_time, done.values)

    def _features(
        self, timeframe: str, slots: np.ndarray, open_time: np.ndarray, c: dict
    ) -> FeatureTick:
        if timeframe in self.history:
            self.history[timeframe].write(slots, open_time, c)
        rows = self.engines[timeframe].update(
            slots,
            open_time,
            c["open"],
            c["high"],
            c["low"],
            c["close"],
            c["volume"],
            taker_buy_base=c.get("taker_buy_base"),
        )
        warm = warm_rows(rows)
        # Unpacked by name: mypy cannot count the fields a starred generator fills.
        close, high, low = (
            np.asarray(c[k], dtype=np.float64)[warm] for k in ("close", "high", "low")
        )
        return FeatureTick(
            timeframe,
            self.exchange[slots][warm],
            self.symbol[slots][warm],
            np.asarray(open_time)[warm],
            close,
            high,
            low,
            rows[warm],
            int((~warm).sum()),
        )

    # --- snapshots ---------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {
            "version": SNAPSHOT_VERSION,
            "timeframes": list(self.timeframes),
            "keys": list(self.keys),
            "engines": {tf: e.snapshot() for tf, e in self.engines.items()},
            "aggregator": None if self.aggregator is None else self.aggregator.snapshot(),
            "last_time": self.last_time.copy(),
            "candles_in": self.candles_in,
        }

    @classmethod
    def from_snapshot(cls, snap: dict, chart_candles: int = 0) -> ShardState:
        if snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"shard snapshot version {snap.get('version')!r} is not supported")
        state = cls(tuple(snap["timeframes"]), chart_candles)
        state._index = KeyIndex(":", snap["keys"])
        state._index_keys()
        state.engines = {
            tf: IncrementalFeatures.from_snapshot(s) for tf, s in snap["engines"].items()
        }
        if snap["aggregator"] is not None:
            state.aggregator = TimeframeAggregator.from_snapshot(snap["aggregator"])
        state.last_time = np.array(snap["last_time"], dtype=np.int64)
        state.candles_in = snap["candles_in"]
        for history in state.history.values():
            history.resize(len(state.keys))
        return state


def _numpy_columns(batch: pa.RecordBatch | pa.Table) -> dict[str, np.ndarray]:
    return {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}


def merge_by_timeframe(ticks: list[FeatureTick]) -> list[FeatureTick]:
    """A batch's ticks as one tick per timeframe, rows in time order: a multi-minute batch
    (a fast replay) then costs one model call per (model, timeframe), not one per minute."""
    groups: dict[str, list[FeatureTick]] = {}
    for tick in ticks:
        groups.setdefault(tick.timeframe, []).append(tick)
    return [group[0] if len(group) == 1 else _concat_ticks(group) for group in groups.values()]


def _concat_ticks(ticks: list[FeatureTick]) -> FeatureTick:
    columns = ("exchange", "symbol", "open_time", "close", "high", "low", "features")
    arrays = {name: np.concatenate([getattr(t, name) for t in ticks]) for name in columns}
    return FeatureTick(ticks[0].timeframe, **arrays, cold=sum(t.cold for t in ticks))


def feature_rows(tick: FeatureTick) -> pa.Table:
    """A tick's warm feature rows as a table: key columns, then one column per feature."""
    from orchestrator.features import FEATURE_NAMES

    n = len(tick.open_time)
    columns = {
        "exchange": pa.array(tick.exchange, pa.string()),
        "symbol": pa.array(tick.symbol, pa.string()),
        "timeframe": pa.array([tick.timeframe] * n, pa.string()),
        "open_time": pa.array(tick.open_time, pa.int64()),
    }
    for i, name in enumerate(FEATURE_NAMES):
        columns[name] = pa.array(tick.features[:, i], pa.float64())
    return pa.table(columns)
