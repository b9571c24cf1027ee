"""Incremental twin: one candle per symbol per call, every symbol of a shard in one call.

All state lives in a few numpy arrays indexed by slot (no per-symbol objects):

* ``history``  (slots, series, WINDOW): the last WINDOW values of each rolling series,
  oldest first, NaN before the series began. Rolling features are recomputed from it
  every candle (a fixed window, so O(1) per candle), with the same sequential sums the
  batch twin uses, which is what makes the two agree to the last bit.
* ``state``    (slots, recursions): EMA / Wilder accumulators (``kernels.STAGE1/2``).
* ``count``    (slots,): candles seen since the slot was added or reset.
* ``last_open_time`` (slots,): guards against a candle delivered twice or out of order.

A call whose slots are one ascending run (the usual case: a shard updates everyone) works
on views in place; any other selection gathers its rows, computes, and scatters back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from orchestrator.features import kernels as k
from orchestrator.features import specs as s

_SERIES = (
    "close",
    "volume",
    "logret",
    "tp",
    "high",
    "low",
    "pos_flow",
    "neg_flow",
    "fast_k",
    "slow_k",
)
_CLOSE, _VOLUME, _LOGRET, _TP, _HIGH, _LOW, _POS, _NEG, _FAST_K, _SLOW_K = range(len(_SERIES))
# Close, volume, log-return and typical-price statistics share one window length, so one
# pass over a (slots, series, period) block serves them all; refuse to import otherwise.
_STATS_PERIOD = s.BB_PERIOD
if not (s.BB_PERIOD == s.SMA_SLOW == s.VOL_PERIOD == s.VOLUME_Z_PERIOD == s.CCI_PERIOD <= s.WINDOW):
    raise ImportError(
        "incremental twin assumes BB, SMA_SLOW, VOL, VOLUME_Z and CCI periods are equal"
    )

SNAPSHOT_FORMAT = "tickcast.features.incremental/1"
_NO_TIME = np.iinfo(np.int64).min


class _Stage:
    """One stage of recursions as parameter vectors, so a stage advances in a few ops."""

    def __init__(self, recursions: Sequence[k.Recursion]):
        self.recursions = tuple(recursions)
        self.names = tuple(r.name for r in recursions)
        self.first = np.array([r.first for r in recursions], dtype=np.int64)
        self.length = np.array([r.length for r in recursions], dtype=np.int64)
        self.decay = np.array([r.decay for r in recursions])
        self.gain = np.array([r.gain for r in recursions])
        self.average = np.array([r.average for r in recursions])
        self.seed_index = self.first + self.length - 1

    def advance(
        self, y: np.ndarray, x: np.ndarray, index: np.ndarray, valid: np.ndarray | None
    ) -> np.ndarray:
        """New state given this candle's inputs ``x`` (slots, recursions) at ``index``."""
        k_in = index[:, None] - self.first
        if valid is not None:
            x = np.where(valid, x, 0.0)
        summed = y + x
        seeding = (k_in == self.length - 1) & self.average
        summed = np.where(seeding, summed / self.length, summed)
        stepped = self.decay * y + self.gain * x
        if valid is not None:
            stepped = np.where(valid, stepped, y)
        return np.where(k_in >= self.length, stepped, np.where(k_in >= 0, summed, y))

    def values(self, y: np.ndarray, index: np.ndarray) -> dict[str, np.ndarray]:
        seeded = np.where(index[:, None] >= self.seed_index, y, np.nan)
        return dict(zip(self.names, seeded.T, strict=True))


_STAGE1, _STAGE2 = _Stage(k.STAGE1), _Stage(k.STAGE2)
_N1 = len(k.STAGE1)
_N_STATE = _N1 + len(k.STAGE2)


class IncrementalFeatures:
    """Feature state for any number of symbols; ``update`` returns one row per slot."""

    def __init__(self) -> None:
        self._keys: list[str] = []
        self._slot_of: dict[str, int] = {}
        self._count = np.zeros(0, dtype=np.int64)
        self._last_open_time = np.zeros(0, dtype=np.int64)
        self._history = np.zeros((0, len(_SERIES), s.WINDOW))
        self._state = np.zeros((0, _N_STATE))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def candles_seen(self, slots: Iterable[int]) -> np.ndarray:
        """Candles each slot has consumed since it was added or reset."""
        return self._count[self._checked_slots(slots)].copy()

    # --- symbols -------------------------------------------------------------------------

    def add_symbols(self, keys: Iterable[str]) -> np.ndarray:
        """Slots for ``keys``, creating the missing ones; idempotent and stable per key
        (until ``drop_slots`` moves the keys after a dropped one down)."""
        if isinstance(keys, str):
            raise TypeError("add_symbols takes a list of keys, not one string")
        slots = []
        for key in map(str, keys):
            slot = self._slot_of.get(key)
            slots.append(self._append(key) if slot is None else slot)
        return np.asarray(slots, dtype=np.int64)

    def reset_symbols(self, slots: Iterable[int]) -> None:
        """Forget the history of ``slots`` (after an unrepairable gap): warm-up starts over."""
        slots = self._checked_slots(slots)
        self._history[slots] = np.nan
        self._state[slots] = 0.0
        self._count[slots] = 0
        self._last_open_time[slots] = _NO_TIME

    def drop_slots(self, slots: Iterable[int]) -> None:
        """Remove ``slots`` with their state; later slots move down (a key added back is cold)."""
        slots = self._checked_slots(slots)
        n = len(self._keys)
        self._keys = np.delete(np.array(self._keys, dtype=object), slots).tolist()
        self._slot_of = {key: i for i, key in enumerate(self._keys)}
        self._count = np.delete(self._count[:n], slots, axis=0)
        self._last_open_time = np.delete(self._last_open_time[:n], slots, axis=0)
        self._history = np.delete(self._history[:n], slots, axis=0)
        self._state = np.delete(self._state[:n], slots, axis=0)

    def _append(self, key: str) -> int:
        slot = len(self._keys)
        if slot == self._count.shape[0]:
            self._grow(max(8, 2 * slot))
        self._keys.append(key)
        self._slot_of[key] = slot
        self.reset_symbols([slot])
        return slot

    def _grow(self, capacity: int) -> None:
        def grown(a: np.ndarray) -> np.ndarray:
            out = np.zeros((capacity, *a.shape[1:]), dtype=a.dtype)
            out[: a.shape[0]] = a
            return out

        self._count, self._last_open_time = grown(self._count), grown(self._last_open_time)
        self._history, self._state = grown(self._history), grown(self._state)

    # --- updates -------------------------------------------------------------------------

    def update(
        self,
        slots: Iterable[int],
        open_time_ms: np.ndarray,
        open: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        taker_buy_base: np.ndarray | None = None,
    ) -> np.ndarray:
        """Consume one candle per slot; return (len(slots), len(FEATURE_NAMES)) float64.

        Rows follow ``slots``; NaN means not warm yet (or taker volume missing). Invalid
        input raises ValueError naming the symbol, before any state changes.
        """
        slots = self._checked_slots(slots)
        candle = _candle_columns(
            len(slots), open_time_ms, open, high, low, close, volume, taker_buy_base
        )
        sel = _selector(slots)
        self._reject_bad_candles(slots, sel, candle)
        index = self._count[sel].copy()
        history, state = self._history[sel], self._state[sel]
        with np.errstate(divide="ignore", invalid="ignore"):
            values = _advance_windows(history, candle)
            _advance_recursions(state, index, values)
            rows = np.ascontiguousarray(k.assemble(values).T)
        rows[index[:, None] < s.WARMUPS] = np.nan
        if not isinstance(sel, slice):
            self._history[sel], self._state[sel] = history, state
        self._count[sel] += 1
        self._last_open_time[sel] = candle["open_time"]
        return rows

    def _checked_slots(self, slots: Iterable[int]) -> np.ndarray:
        arr = np.asarray(list(slots) if not isinstance(slots, np.ndarray) else slots)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"slots must be a 1-D integer array, got {arr.dtype} {arr.shape}")
        if arr.min() < 0 or arr.max() >= len(self._keys):
            raise ValueError(f"slot out of range: engine has {len(self._keys)} symbols")
        return arr.astype(np.int64, copy=False)

    def _reject_bad_candles(self, slots: np.ndarray, sel, candle: dict) -> None:
        bad = k.invalid_candles(
            candle["open"],
            candle["high"],
            candle["low"],
            candle["close"],
            candle["volume"],
            candle["taker_buy_base"],
        )
        if bad.any():
            i = int(np.argmax(bad))
            fields = {f: float(candle[f][i]) for f in ("open", "high", "low", "close", "volume")}
            raise ValueError(f"invalid candle for {self._keys[slots[i]]!r}: {fields}")
        stale = candle["open_time"] <= self._last_open_time[sel]
        if stale.any():
            i = int(np.argmax(stale))
            raise ValueError(
                f"{self._keys[slots[i]]!r}: open_time {int(candle['open_time'][i])} is not after "
                f"the previous candle's {int(self._last_open_time[slots[i]])}"
            )

    # --- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Plain picklable state; ``from_snapshot`` of it continues bit for bit."""
        n = len(self._keys)
        return {
            "format": SNAPSHOT_FORMAT,
            "feature_names": list(s.FEATURE_NAMES),
            "keys": list(self._keys),
            "count": self._count[:n].copy(),
            "last_open_time": self._last_open_time[:n].copy(),
            "history": self._history[:n].copy(),
            "state": self._state[:n].copy(),
        }

    @classmethod
    def from_snapshot(cls, snap: dict) -> IncrementalFeatures:
        if snap.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"not a feature-engine snapshot: format {snap.get('format')!r}")
        if tuple(snap["feature_names"]) != s.FEATURE_NAMES:
            raise ValueError("snapshot was taken with a different feature set; rebuild it")
        n = len(snap["keys"])
        expected = {
            "count": (n,),
            "last_open_time": (n,),
            "history": (n, len(_SERIES), s.WINDOW),
            "state": (n, _N_STATE),
        }
        for name, shape in expected.items():
            if np.shape(snap[name]) != shape:
                raise ValueError(
                    f"snapshot field {name!r} has shape {np.shape(snap[name])}, expected {shape}"
                )
        eng = cls()
        eng._keys = [str(key) for key in snap["keys"]]
        eng._slot_of = {key: i for i, key in enumerate(eng._keys)}
        eng._count = np.array(snap["count"], dtype=np.int64)
        eng._last_open_time = np.array(snap["last_open_time"], dtype=np.int64)
        eng._history = np.array(snap["history"], dtype=np.float64)
        eng._state = np.array(snap["state"], dtype=np.float64)
        return eng


def _selector(slots: np.ndarray) -> slice | np.ndarray:
    """A slice when slots are one ascending run (views, no copies), else the index array."""
    n = len(slots)
    if n and slots[-1] - slots[0] == n - 1 and (n == 1 or bool(np.all(np.diff(slots) == 1))):
        return slice(int(slots[0]), int(slots[0]) + n)
    if np.unique(slots).size != n:
        raise ValueError("slots must be unique within one update call")
    return slots


def _candle_columns(n: int, open_time_ms, open_, high, low, close, volume, taker) -> dict:
    cols: dict[str, np.ndarray | None] = {"open_time": np.asarray(open_time_ms, dtype=np.int64)}
    named = (("open", open_), ("high", high), ("low", low), ("close", close), ("volume", volume))
    for name, values in named:
        cols[name] = np.asarray(values, dtype=np.float64)
    cols["taker_buy_base"] = None if taker is None else np.asarray(taker, dtype=np.float64)
    for name, values in cols.items():
        if values is not None and values.shape != (n,):
            raise ValueError(f"{name} has shape {values.shape}, expected ({n},) like slots")
    return cols


def _advance_windows(h: np.ndarray, c: dict) -> dict:
    """Push this candle into the history block ``h`` and read every rolling value."""
    close, high, low, volume = c["close"], c["high"], c["low"], c["volume"]
    prev_close = h[:, _CLOSE, -1]
    tp = k.typical_price(high, low, close)
    pos, neg = k.money_flows(tp, h[:, _TP, -1], volume)
    values = {**c, "tp": tp, "true_range": k.true_range(high, low, prev_close)}
    values["plus_dm"], values["minus_dm"] = k.directional_movement(
        high, low, h[:, _HIGH, -1], h[:, _LOW, -1]
    )
    values["gain"], values["loss"] = k.gains_losses(close, prev_close)
    logret = k.log_return(close, prev_close)
    h[:, :, :-1] = h[:, :, 1:]
    for i, new in enumerate((close, volume, logret, tp, high, low, pos, neg)):
        h[:, i, -1] = new
    values.update(_stochastic(h, close))
    values.update(_window_stats(h))
    return values


def _stochastic(h: np.ndarray, close: np.ndarray) -> dict:
    hh = k.seq_max(h[:, _HIGH, -s.STOCH_FASTK :])
    ll = k.seq_min(h[:, _LOW, -s.STOCH_FASTK :])
    h[:, _FAST_K, -1] = k.stoch_fast_k(close, hh, ll)
    slow_k = k.window_mean(h[:, _FAST_K, -s.STOCH_SLOWK :])
    h[:, _SLOW_K, -1] = slow_k
    return {
        "slow_k": slow_k,
        "slow_d": k.window_mean(h[:, _SLOW_K, -s.STOCH_SLOWD :]),
        "willr_hh": hh
        if s.WILLR_PERIOD == s.STOCH_FASTK
        else k.seq_max(h[:, _HIGH, -s.WILLR_PERIOD :]),
        "willr_ll": ll
        if s.WILLR_PERIOD == s.STOCH_FASTK
        else k.seq_min(h[:, _LOW, -s.WILLR_PERIOD :]),
    }


def _window_stats(h: np.ndarray) -> dict:
    block = h[:, _CLOSE : _TP + 1, -_STATS_PERIOD:]  # close, volume, logret, tp
    mean = k.window_mean(block)
    std = k.window_std(block[:, :3], mean[:, :3])
    flat = k.window_flat(block)
    tp_window, tp_mean = block[:, 3], mean[:, 3]
    flows = k.seq_sum(h[:, _POS:_FAST_K, -s.MFI_PERIOD :])
    out = {
        "close_mean": mean[:, 0],
        "close_std": std[:, 0],
        "close_flat": flat[:, 0],
        "volume_mean": mean[:, 1],
        "volume_std": std[:, 1],
        "volume_flat": flat[:, 1],
        "logret_std": std[:, 2],
        "logret_flat": flat[:, 2],
        "tp_mean": tp_mean,
        "tp_mad": k.window_mean_abs_dev(tp_window, tp_mean),
        "tp_flat": flat[:, 3],
        "pos_flow_sum": flows[:, 0],
        "neg_flow_sum": flows[:, 1],
        "sma_5": k.window_mean(h[:, _CLOSE, -s.SMA_FAST :]),
    }
    for lag in k.CLOSE_LAGS:
        out[f"close_lag_{lag}"] = h[:, _CLOSE, -1 - lag].copy()
    return out


def _advance_recursions(state: np.ndarray, index: np.ndarray, values: dict) -> None:
    """Advance both recursion stages in ``state`` (in place) and add their values."""
    x1 = np.stack([values[r.input] for r in _STAGE1.recursions], axis=1)
    state[:, :_N1] = _STAGE1.advance(state[:, :_N1], x1, index, None)
    values.update(_STAGE1.values(state[:, :_N1], index))
    values["macd_line"] = values["macd_fast"] - values["macd_slow"]
    values["dx"], values["dx_valid"] = k.directional_index(
        values["plus_dm"], values["minus_dm"], values["tr_sum"]
    )
    x2 = np.stack([values[r.input] for r in _STAGE2.recursions], axis=1)
    valid = np.stack(
        [
            values[r.valid] if r.valid else np.ones(len(index), dtype=bool)
            for r in _STAGE2.recursions
        ],
        axis=1,
    )
    state[:, _N1:] = _STAGE2.advance(state[:, _N1:], x2, index, valid)
    values.update(_STAGE2.values(state[:, _N1:], index))
