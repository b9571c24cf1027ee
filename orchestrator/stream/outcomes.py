"""Outcome scoring: every prediction's realized label once later candles close, and rolling
metrics per (model_id, timeframe) (pure: no Ray, no I/O).

A prediction for candle t of a series (exchange, symbol, timeframe) reads candles
t - lookback .. t + horizon (``LABEL_SPECS``) and is settled by candle t + horizon. The
tracker keeps a short ring of recent candles per series; once every candle of a window is
there it computes the label by calling the training label function on that window, so a
live outcome means exactly what the model was trained on. Training splits series at gaps,
so a window must be contiguous: a prediction whose window has a gap, or whose symbol stops
trading, can never be scored. It expires once the newest candle of its timeframe and
exchange is ``expire_after`` candles past its settling candle, and is counted.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.market.timeframes import TIMEFRAME_MS, timeframe_ms
from orchestrator.models.comparison import add_blocks, block_sums, compare, pair_losses
from orchestrator.models.labels import LABEL_SPECS
from orchestrator.models.scoring import CLASSIFIERS, score, window_labels
from orchestrator.stream.events import join_event_ids, model_key
from orchestrator.stream.keyindex import KeyIndex

SNAPSHOT_VERSION = 1
KEY_COLUMNS = ("exchange", "symbol", "timeframe")
KEY_SEPARATOR = "\x1f"  # never in an exchange, symbol or timeframe name

OUTCOME_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("model_type", pa.string(), nullable=False),
        pa.field("role", pa.string()),  # the prediction's role; null in older logs: production
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("open_time", pa.int64(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),  # the prediction's primary value
        pa.field("realized", pa.float64(), nullable=False),  # label (class) or value
        pa.field("correct", pa.bool_()),  # null for regressors
        pa.field("error", pa.float64(), nullable=False),  # |error| or the Brier term
        pa.field("log_loss", pa.float64()),  # null for regressors
        pa.field("scored_at_open_time", pa.int64(), nullable=False),
    ]
)

# Pending predictions are numbers only: "model" is a code for (model_id, model_version,
# model_type, role) and the event id is recomputed from the key when an outcome is written.
PENDING_DTYPES = {
    "model": np.int64,
    "slot": np.int64,
    "open_time": np.int64,
    "value": np.float64,
    "p_low": np.float64,  # swing models' P(swing low); NaN for other types
    "settle": np.int64,  # open time of the candle that settles the prediction
}
MODEL_COLUMNS = ("model_id", "model_version", "model_type", "role")
PRODUCTION = "production"
PAIR_COLUMNS = ("model", "slot", "open_time")  # what an event id is made of


# --- state ---------------------------------------------------------------------------------


class CandleRing:
    """The last ``size`` candles of every series, at column (open_time / step) mod size, so
    any candle is found, or found missing, by one gather."""

    def __init__(self, size: int):
        self.size = size
        self._index = KeyIndex(KEY_SEPARATOR)  # exchange, symbol, timeframe per slot
        self.columns = {name: np.empty(0, dtype=object) for name in KEY_COLUMNS}  # per slot
        self.arrow = {name: pa.array([], pa.string()) for name in KEY_COLUMNS}  # as Arrow
        self.step = np.empty(0, dtype=np.int64)
        self.time = np.empty((0, size), dtype=np.int64)
        self.ohlc = {name: np.empty((0, size)) for name in ("close", "high", "low")}

    @property
    def keys(self) -> list[tuple[str, ...]]:
        return [tuple(k.split(KEY_SEPARATOR)) for k in self._index.keys]

    @property
    def n_slots(self) -> int:
        return len(self._index)

    def slots_for(self, exchange, symbol, timeframe) -> np.ndarray:
        """Each row's slot (new series are registered)."""
        known = len(self._index)
        slots = self._index.slots(exchange, symbol, timeframe)
        if len(self._index) > known:
            self._register(known)
        return slots

    def _key_columns(self) -> None:
        self.columns = dict(zip(KEY_COLUMNS, self._index.split(len(KEY_COLUMNS)), strict=True))
        self.arrow = {k: pa.array(v, pa.string()) for k, v in self.columns.items()}
        # per slot: a small code of its exchange (feeds of different exchanges may replay
        # different days: each exchange's series keep their own clock)
        exchanges = self.columns["exchange"]
        self.exchange_code = (
            np.unique(exchanges.astype(str), return_inverse=True)[1].astype(np.int64)
            if len(exchanges)
            else np.zeros(0, dtype=np.int64)
        )

    def _register(self, first_new: int) -> None:
        self._key_columns()
        new = len(self._index) - first_new
        self.step = np.concatenate(
            [self.step, [timeframe_ms(t) for t in self.columns["timeframe"][first_new:]]]
        )
        self.time = np.vstack([self.time, np.full((new, self.size), -1, dtype=np.int64)])
        for name, values in self.ohlc.items():
            self.ohlc[name] = np.vstack([values, np.full((new, self.size), np.nan)])

    def write(self, slots, open_time, close, high, low) -> None:
        column = (open_time // self.step[slots]) % self.size
        newer = open_time >= self.time[slots, column]  # a replayed old candle never clobbers
        slots, column = slots[newer], column[newer]
        self.time[slots, column] = open_time[newer]
        for name, values in (("close", close), ("high", high), ("low", low)):
            self.ohlc[name][slots, column] = np.asarray(values, dtype=np.float64)[newer]

    def gather(self, slots: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, dict]:
        """(m, k) presence of the candles at ``times`` of each row's slot, and their OHLC."""
        rows = slots[:, None]
        column = (times // self.step[rows]) % self.size
        present = self.time[rows, column] == times
        return present, {name: values[rows, column] for name, values in self.ohlc.items()}

    def slots_of(self, exchange: str, symbols: list[str]) -> np.ndarray:
        """The slots of every timeframe's series of ``symbols`` (a look-up, never an insert)."""
        wanted = pc.is_in(
            self.arrow["symbol"], value_set=pa.array(list(symbols), pa.string())
        ).to_numpy(zero_copy_only=False)
        return np.flatnonzero((self.columns["exchange"] == exchange) & wanted)

    def drop_slots(self, slots: np.ndarray) -> np.ndarray:
        """Remove the series at ``slots``; returns each old slot's new one (-1: removed)."""
        kept = np.ones(self.n_slots, dtype=bool)
        kept[slots] = False
        self._index.drop_slots(slots)
        self._key_columns()
        self.step, self.time = self.step[kept], self.time[kept]
        self.ohlc = {name: values[kept] for name, values in self.ohlc.items()}
        return np.where(kept, np.cumsum(kept) - 1, -1)

    def snapshot(self) -> dict:
        return {
            "size": self.size,
            "keys": list(self.keys),
            "step": self.step.copy(),
            "time": self.time.copy(),
            "ohlc": {k: v.copy() for k, v in self.ohlc.items()},
        }

    @classmethod
    def from_snapshot(cls, snap: dict) -> CandleRing:
        ring = cls(snap["size"])
        ring._index = KeyIndex(KEY_SEPARATOR, [KEY_SEPARATOR.join(k) for k in snap["keys"]])
        ring._key_columns()
        ring.step, ring.time = snap["step"].copy(), snap["time"].copy()
        ring.ohlc = {k: v.copy() for k, v in snap["ohlc"].items()}
        return ring


CALIBRATION_BINS = 10  # equal-width bins of P(up): shard bins add up exactly


class RollingOutcomes:
    """The last ``size`` outcomes of one (model_id, timeframe): hit, error, log loss, and the
    prediction's value and realized label (for the naive baseline and calibration)."""

    COLUMNS = 5  # hit, error, log_loss, value, realized

    def __init__(self, size: int):
        self.values = np.full((size, self.COLUMNS), np.nan)
        self.filled = 0
        self.next = 0

    def extend(self, rows: np.ndarray) -> None:
        size = len(self.values)
        rows = rows[-size:]
        self.values[(self.next + np.arange(len(rows))) % size] = rows
        self.next = (self.next + len(rows)) % size
        self.filled = min(size, self.filled + len(rows))

    def restore(self, values: np.ndarray, filled: int, nxt: int) -> None:
        """A snapshot's window; one from before value/realized were kept gets NaN there."""
        padded = np.full((len(values), self.COLUMNS), np.nan)
        padded[:, : values.shape[1]] = values
        self.values, self.filled, self.next = padded, filled, nxt

    def summary(self, model_type: str) -> dict:
        """The window's statistics, and the sums a merge over shards needs for the naive
        baseline and the calibration curve (``sums``)."""
        hit, error, log_loss, value, realized = self.values[: self.filled].T
        classifier = model_type in CLASSIFIERS
        if not self.filled:
            names = ("accuracy", "brier", "log_loss") if classifier else ("mae", "rmse")
            return {"count": 0, **dict.fromkeys(names), "sums": {}}
        if classifier:
            stats = {
                "accuracy": float(hit.mean()),
                "brier": float(error.mean()),
                "log_loss": float(log_loss.mean()),
            }
        else:
            stats = {"mae": float(error.mean()), "rmse": float(np.sqrt((error**2).mean()))}
        return {"count": self.filled, **stats, "sums": baseline_sums(model_type, value, realized)}


def baseline_sums(model_type: str, value: np.ndarray, realized: np.ndarray) -> dict:
    """Additive sums of a window's labels (and P(up) bins for direction models).

    Naive baselines, as the evaluation report's where they can be computed live: direction
    and swing, the window's own class frequencies; return, persistence (log return 0);
    volatility, the window's mean realized volatility (climatology).
    """
    known = np.isfinite(realized)
    y, p = realized[known], value[known]
    sums: dict = {"n": int(known.sum())}
    if model_type == "direction":
        bins = np.clip((p * CALIBRATION_BINS).astype(np.int64), 0, CALIBRATION_BINS - 1)
        sums["ups"] = float(y.sum())
        sums["bin_n"] = np.bincount(bins, minlength=CALIBRATION_BINS).tolist()
        sums["bin_p"] = np.bincount(bins, p, minlength=CALIBRATION_BINS).tolist()
        sums["bin_y"] = np.bincount(bins, y, minlength=CALIBRATION_BINS).tolist()
    elif model_type == "swing":
        sums["classes"] = np.bincount(y.astype(np.int64), minlength=3)[:3].tolist()
    else:
        sums.update(y=float(y.sum()), y2=float((y**2).sum()), abs_y=float(np.abs(y).sum()))
        sums["abs_dev"] = float(np.abs(y - y.mean()).sum()) if len(y) else 0.0
    return sums


def merge_metrics(parts: list[dict]) -> dict:
    """Several trackers' ``metrics()`` (one per feature shard) as one: counts add up, each
    window statistic is the mean of the shards' weighted by their window counts (RMSE via
    its square); the naive baseline and the calibration curve come from the added sums."""
    return {
        "window": max((p.get("window", 0) for p in parts), default=0),
        "pending": sum(p.get("pending", 0) for p in parts),
        "unscorable": sum(p.get("unscorable", 0) for p in parts),
        "models": {
            m: {tf: _merge_stats(s) for tf, s in by_tf.items()}
            for m, by_tf in _collect(parts, "models").items()
        },
        "challengers": {
            m: {tf: _merge_challenger(s) for tf, s in by_tf.items()}
            for m, by_tf in _collect(parts, "challengers").items()
        },
    }


def _collect(parts: list[dict], section: str) -> dict[str, dict[str, list[dict]]]:
    found: dict[str, dict[str, list[dict]]] = {}
    for part in parts:
        for model_id, by_tf in part.get(section, {}).items():
            for timeframe, stats in by_tf.items():
                found.setdefault(model_id, {}).setdefault(timeframe, []).append(stats)
    return found


def _merge_challenger(stats: list[dict]) -> dict:
    """A challenger's merged statistics and its comparison with the champion: the shards'
    block sums of the same two versions added, then the paired bootstrap."""
    out = {**_merge_stats(stats), "role": stats[0]["role"]}
    sums = [s["comparison"] for s in stats if s.get("comparison")]
    if not sums:
        out["comparison"] = compare({}, None, out["version"])
        return out
    versions = max(
        {(c["champion"], c["challenger"]) for c in sums},
        key=lambda v: sum(1 for c in sums if (c["champion"], c["challenger"]) == v),
    )
    blocks: dict = {}
    for c in sums:
        if (c["champion"], c["challenger"]) == versions:
            add_blocks(blocks, c["blocks"])
    out["comparison"] = compare(blocks, *versions)
    return out


def _merge_stats(stats: list[dict]) -> dict:
    out = {
        "model_type": stats[0]["model_type"],
        "version": next((s["version"] for s in stats if s.get("version")), None),
        **{k: sum(s[k] for s in stats) for k in ("scored", "expired", "dropped", "count")},
    }
    for name in ("accuracy", "brier", "log_loss", "mae", "rmse"):
        weighted = [(s["count"], s[name]) for s in stats if s.get(name) is not None and s["count"]]
        if name in stats[0]:
            out[name] = _weighted_mean(weighted, squared=name == "rmse")
    sums = _add_sums([s.get("sums") or {} for s in stats])
    out["baseline"] = naive_baseline(out["model_type"], sums)
    if out["model_type"] == "direction":
        out["calibration"] = calibration_curve(sums)
    return out


def _add_sums(parts: list[dict]) -> dict:
    total: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, list):
                total[key] = [
                    a + b for a, b in zip(total.get(key, [0] * len(value)), value, strict=True)
                ]
            else:
                total[key] = total.get(key, 0) + value
    return total


def naive_baseline(model_type: str, sums: dict) -> dict | None:
    """The naive baseline's statistics over the same outcomes (see ``baseline_sums``)."""
    n = sums.get("n", 0)
    if not n:
        return None
    if model_type in CLASSIFIERS:
        freq = (
            np.array([n - sums["ups"], sums["ups"]])
            if model_type == "direction"
            else np.array(sums["classes"], dtype=np.float64)
        ) / n
        nonzero = freq[freq > 0]
        return {
            "accuracy": float(freq.max()),
            "brier": float(1.0 - (freq**2).sum()) * (0.5 if model_type == "direction" else 1.0),
            "log_loss": float(-(nonzero * np.log(nonzero)).sum()),
        }
    mean, mean_sq = sums["y"] / n, sums["y2"] / n
    if model_type == "return":  # persistence: a log return of 0
        return {"mae": sums["abs_y"] / n, "rmse": float(np.sqrt(mean_sq))}
    return {"mae": sums["abs_dev"] / n, "rmse": float(np.sqrt(max(mean_sq - mean**2, 0.0)))}


def calibration_curve(sums: dict) -> list[dict]:
    """Reliability: per P(up) bin with outcomes, the mean predicted probability, the observed
    frequency of up candles, and how many outcomes the bin holds."""
    return [
        {"p": p / n, "observed": y / n, "n": n}
        for n, p, y in zip(
            sums.get("bin_n", []), sums.get("bin_p", []), sums.get("bin_y", []), strict=True
        )
        if n
    ]


def _weighted_mean(pairs: list[tuple[int, float]], squared: bool) -> float | None:
    if not pairs:
        return None
    counts = np.array([c for c, _ in pairs], dtype=np.float64)
    values = np.array([v for _, v in pairs], dtype=np.float64)
    if squared:
        return float(np.sqrt((counts * values**2).sum() / counts.sum()))
    return float((counts * values).sum() / counts.sum())


def _model_column(table: pa.Table, name: str) -> pa.Array | pa.ChunkedArray:
    """A model column of a prediction table; a table from before roles has production."""
    if name != "role":
        return table.column(name)
    if name not in table.column_names:
        return pa.array([PRODUCTION] * table.num_rows, pa.string())
    return pc.fill_null(table.column(name), PRODUCTION)


def _take(columns: dict, index) -> dict:
    return {k: v[index] for k, v in columns.items()}


def _concat(a: dict, b: dict) -> dict:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def _concat_all(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _pair_keys(high: np.ndarray, low: np.ndarray) -> np.ndarray | None:
    """One int64 per (high, low) pair of non-negative ints, equal exactly when both are, or
    None when the pairs do not fit in 63 bits."""
    if not len(high):
        return np.zeros(0, dtype=np.int64)
    span = int(low.max()) + 1
    if (int(high.max()) + 1) * span >= 1 << 62:
        return None
    return high * span + low


def _first_of_each(keys: np.ndarray) -> np.ndarray:
    """Rows whose key no earlier row has."""
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return first


def _rank_within_groups(group: np.ndarray, newest_first: np.ndarray) -> np.ndarray:
    """0 for the newest row of each group, 1 for the next, ..."""
    n = len(group)
    order = np.lexsort((-newest_first, group))
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    sizes = np.diff(np.r_[starts, n])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, sizes)
    return rank


class ModelCodes:
    """Small integer codes of (model_id, model_version, model_type, role), so pending
    predictions and their groups are numbers; the strings come back once per code."""

    TYPES = tuple(LABEL_SPECS)

    def __init__(self) -> None:
        self.models: list[tuple[str, str, str, str]] = []
        self._code: dict[tuple[str, str, str, str], int] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._model_ids: dict[str, int] = {}
        # per code: its (model_id, role)'s code: the rolling metrics' and bounds' group
        self.id_code = np.zeros(0, dtype=np.int64)
        self.model_id_code = np.zeros(0, dtype=np.int64)  # per code: its model_id's code
        self.production = np.zeros(0, dtype=bool)  # per code: the champion's role
        self.type_code = np.zeros(0, dtype=np.int64)  # per code: index in TYPES
        self.horizon = np.zeros(0, dtype=np.int64)  # per code: candles to its settling one
        self._arrow = self._arrays()  # per code: the strings, as Arrow (rebuilt on a new code)

    def codes(self, model_id, model_version, model_type, role) -> np.ndarray:
        """Each row's code (Arrow string columns in), new models registered."""
        joined = pc.binary_join_element_wise(
            model_id, model_version, model_type, role, KEY_SEPARATOR
        )
        encoded = (
            joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined
        ).dictionary_encode()
        lookup = np.array(
            [self.code(*v.split(KEY_SEPARATOR)) for v in encoded.dictionary.to_pylist()],
            dtype=np.int64,
        )
        return lookup[encoded.indices.to_numpy()] if len(lookup) else np.zeros(0, np.int64)

    def code(self, model_id: str, model_version: str, model_type: str, role: str) -> int:
        key = (model_id, model_version, model_type, role)
        if key not in self._code:
            self._code[key] = len(self.models)
            self.models.append(key)
            id_code = self._ids.setdefault((model_id, role), len(self._ids))
            self.id_code = np.append(self.id_code, id_code)
            model_id_code = self._model_ids.setdefault(model_id, len(self._model_ids))
            self.model_id_code = np.append(self.model_id_code, model_id_code)
            self.production = np.append(self.production, role == PRODUCTION)
            self.type_code = np.append(self.type_code, self.TYPES.index(model_type))
            self.horizon = np.append(self.horizon, LABEL_SPECS[model_type].horizon)
            self._arrow = self._arrays()
        return self._code[key]

    def _arrays(self) -> dict[str, pa.Array]:
        columns = list(zip(*self.models, strict=True)) or [()] * len(MODEL_COLUMNS)
        return {
            **{n: pa.array(c, pa.string()) for n, c in zip(MODEL_COLUMNS, columns, strict=True)},
            "prefix": pa.array([model_key(m, v) for m, v, *_ in self.models], pa.string()),
        }

    def strings(self, codes: np.ndarray) -> dict[str, pa.Array]:
        """model_id, model_version, model_type, role and the event id prefix of each row."""
        index = pa.array(codes, pa.int64())
        return {name: values.take(index) for name, values in self._arrow.items()}


class OutcomeTracker:
    """Pending predictions, recent candles and rolling metrics (see module doc).

    Calls may come in either order: a prediction is scored at the first ``observe_candles``
    of its timeframe at or after its settling candle that finds its whole window in the ring.
    """

    def __init__(
        self, window: int = 500, max_pending: int = 64, expire_after: int = 10, history: int = 32
    ):
        span = max(s.lookback + s.horizon + 1 for s in LABEL_SPECS.values())
        if history < span + expire_after:
            raise ValueError(
                f"history={history} must be >= the longest label window ({span})"
                f" + expire_after ({expire_after})"
            )
        self.window, self.max_pending, self.expire_after = window, max_pending, expire_after
        self._ring = CandleRing(history)
        self._models = ModelCodes()
        # Pending predictions per timeframe (its step in ms): a tick touches only its own.
        self._pending: dict[int, dict] = {}
        # per (model_id, timeframe, role): rolling window and totals
        self._windows: dict[tuple[str, str, str], RollingOutcomes] = {}
        self._totals: dict[tuple[str, str, str], dict] = {}
        # per (model_id, timeframe): the champion against its challenger (block sums)
        self._comparisons: dict[tuple[str, str], dict] = {}
        self.unscorable = 0  # predictions of an unknown model type or timeframe

    @property
    def pending(self) -> int:
        return sum(len(part["slot"]) for part in self._pending.values())

    def _pending_of(self, step: int) -> dict:
        return self._pending.get(step) or {
            k: np.empty(0, dtype=t) for k, t in PENDING_DTYPES.items()
        }

    # --- predictions ---------------------------------------------------------------------
    def add_predictions(self, table: pa.Table) -> None:
        new = self._pending_rows(table)
        steps = self._ring.step[new["slot"]]
        unique = np.unique(steps).tolist()
        for step in unique:
            rows = new if len(unique) == 1 else _take(new, steps == step)
            part = self._pending_of(step)
            # An event id is (model, series, open time): a replayed prediction is a no-op.
            times = part["open_time"]
            near = (times >= rows["open_time"].min()) & (times <= rows["open_time"].max())
            seen = {k: part[k][near] for k in PAIR_COLUMNS}
            merged = _concat(part, _take(rows, self._unseen(rows, seen)))
            keep = self._within_bound(merged)
            self._count(_take(merged, ~keep), "dropped")
            self._pending[step] = _take(merged, keep)

    def _unseen(self, rows: dict, seen: dict) -> np.ndarray:
        """Rows not in ``seen`` and not an earlier row's (same model, series, open time)."""
        n_rows, n_seen = len(rows["slot"]), len(seen["slot"])
        model, slot, open_time = (np.concatenate([rows[k], seen[k]]) for k in PAIR_COLUMNS)
        series = model * max(self._ring.n_slots, 1) + slot
        keys = _pair_keys(series, open_time - open_time.min())
        if keys is None:  # too wide to pack: compare the pairs themselves
            keys = np.unique(np.column_stack([series, open_time]), axis=0, return_inverse=True)[
                1
            ].ravel()
        fresh = ~np.isin(keys[:n_rows], keys[n_rows:]) if n_seen else np.ones(n_rows, dtype=bool)
        mine = keys[:n_rows]
        if len(np.unique(mine)) == n_rows:  # all distinct, as a tick's rows are
            return fresh
        return fresh & _first_of_each(mine)

    def drop(self, exchange: str, symbols: list[str]) -> int:
        """Forget ``symbols`` (removed from the pipeline): their candles on every timeframe
        and their pending predictions, which are not counted as outcomes of any kind (the
        rolling windows keep what they scored). Returns how many predictions went."""
        moved = self._ring.drop_slots(self._ring.slots_of(exchange, symbols))
        gone = 0
        for step, part in self._pending.items():
            slot = moved[part["slot"]]
            kept = slot >= 0
            self._pending[step] = {**_take(part, kept), "slot": slot[kept]}
            gone += int((~kept).sum())
        return gone

    def _pending_rows(self, table: pa.Table) -> dict:
        known = pc.is_in(
            table.column("model_type"), value_set=pa.array(list(LABEL_SPECS))
        ).to_numpy(zero_copy_only=False) & pc.is_in(
            table.column("timeframe"), value_set=pa.array(list(TIMEFRAME_MS))
        ).to_numpy(zero_copy_only=False)
        self.unscorable += int((~known).sum())
        if not known.all():
            table = table.filter(pa.array(known))
        model = self._models.codes(*(_model_column(table, k) for k in MODEL_COLUMNS))
        slot = self._ring.slots_for(*(table.column(k) for k in KEY_COLUMNS))  # Arrow in, no copies
        open_time = table.column("open_time").to_numpy()
        rows = {
            "model": model,
            "slot": slot,
            "open_time": open_time,
            "value": table.column("value").to_numpy(zero_copy_only=False),
            "p_low": pc.map_lookup(table.column("outputs"), "p_swing_low", "first").to_numpy(
                zero_copy_only=False
            ),
            "settle": open_time + self._models.horizon[model] * self._ring.step[slot],
        }
        return {k: np.asarray(rows[k], dtype=t) for k, t in PENDING_DTYPES.items()}

    def _within_bound(self, pending: dict) -> np.ndarray:
        """Keep the newest ``max_pending`` of each (model_id, series)."""
        if not len(pending["slot"]):
            return np.ones(0, dtype=bool)
        group = self._models.id_code[pending["model"]] * self._ring.n_slots + pending["slot"]
        if np.bincount(group).max() <= self.max_pending:  # no series over its bound: no sort
            return np.ones(len(group), dtype=bool)
        return _rank_within_groups(group, pending["open_time"]) < self.max_pending

    # --- candles -------------------------------------------------------------------------
    def observe_candles(
        self, exchange, symbol, timeframe: str, open_time, close, high, low
    ) -> pa.Table:
        """Record one tick's closed ``timeframe`` candles; return the outcomes they settle."""
        open_time = np.asarray(open_time, dtype=np.int64)
        n = len(open_time)
        if n == 0:
            return OUTCOME_SCHEMA.empty_table()
        exchange, symbol = np.broadcast_to(exchange, n), np.broadcast_to(symbol, n)
        slots = self._ring.slots_for(exchange, symbol, pa.scalar(timeframe))  # broadcast
        self._ring.write(slots, open_time, close, high, low)
        step = timeframe_ms(timeframe)
        pending = self._pending_of(step)
        now = self._now(slots, open_time, pending["slot"])
        due = np.flatnonzero(pending["settle"] <= now)
        scored, outcomes = self._score(pending, due)
        late = pending["settle"] + self.expire_after * step < now
        expired = late & ~scored
        self._count(_take(pending, expired), "expired")
        if scored.any() or expired.any():
            self._pending[step] = _take(pending, ~(scored | expired))
        if outcomes is None:
            return OUTCOME_SCHEMA.empty_table()
        self._record(outcomes)
        return self._outcome_table(outcomes)

    def _now(self, slots: np.ndarray, open_time: np.ndarray, pending: np.ndarray) -> np.ndarray:
        """Per pending prediction: the newest candle this tick brought of its exchange (-1:
        none). Its exchange's clock, not the tick's: a replay of one exchange's March must
        not expire another exchange's pending February predictions in the same shard."""
        codes = self._ring.exchange_code
        newest = np.full(int(codes.max()) + 1 if len(codes) else 1, -1, dtype=np.int64)
        np.maximum.at(newest, codes[slots], open_time)
        return newest[codes[pending]]

    def _score(self, pending: dict, due: np.ndarray) -> tuple[np.ndarray, dict | None]:
        """(which of ``pending`` are settled now, their outcome columns)."""
        scored = np.zeros(len(pending["slot"]), dtype=bool)
        parts = []
        types = self._models.type_code[pending["model"][due]]
        for type_code in np.unique(types).tolist():
            index = due[types == type_code]
            model_type = ModelCodes.TYPES[type_code]
            complete, columns = self._score_type(model_type, _take(pending, index))
            scored[index[complete]] = True
            parts.append(columns)
        if not parts:
            return scored, None
        return scored, {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _score_type(self, model_type: str, rows: dict) -> tuple[np.ndarray, dict]:
        spec = LABEL_SPECS[model_type]
        offsets = np.arange(-spec.lookback, spec.horizon + 1)
        times = rows["open_time"][:, None] + offsets * self._ring.step[rows["slot"]][:, None]
        present, ohlc = self._ring.gather(rows["slot"], times)
        # numpy types .all(axis=...) as scalar-or-array; ``present`` is 2-D, so an array.
        complete = cast(np.ndarray, present.all(axis=1))
        rows = _take(rows, complete)
        y = window_labels(model_type, *(ohlc[k][complete] for k in ("close", "high", "low")))
        hit, error, log_loss = score(model_type, rows["value"], rows["p_low"], y)
        return complete, {**rows, "realized": y, "hit": hit, "error": error, "log_loss": log_loss}

    def _outcome_table(self, c: dict) -> pa.Table:
        models = self._models.strings(c["model"])
        slot = pa.array(c["slot"], pa.int64())
        keys = {k: self._ring.arrow[k].take(slot) for k in KEY_COLUMNS}
        open_time = pa.array(c["open_time"], pa.int64())
        columns = {
            "event_id": join_event_ids(
                models["prefix"], keys["exchange"], keys["symbol"], keys["timeframe"], open_time
            ),
            **{k: models[k] for k in MODEL_COLUMNS},
            **keys,
            "open_time": open_time,
            "value": c["value"],
            "realized": c["realized"],
            "correct": pa.array(c["hit"] == 1.0, mask=np.isnan(c["hit"])),
            "error": c["error"],
            "log_loss": pa.array(c["log_loss"], pa.float64(), mask=np.isnan(c["log_loss"])),
            "scored_at_open_time": c["settle"],
        }
        return pa.Table.from_arrays(
            [pa.array(columns[f.name], f.type) for f in OUTCOME_SCHEMA], schema=OUTCOME_SCHEMA
        )

    # --- metrics -------------------------------------------------------------------------
    def _totals_of(self, model_id: str, timeframe: str, model_type: str, role: str) -> dict:
        key = (model_id, timeframe, role)
        if key not in self._totals:
            self._totals[key] = {"model_type": model_type, "scored": 0, "expired": 0, "dropped": 0}
            self._windows[key] = RollingOutcomes(self.window)
        return self._totals[key]

    def _groups(self, rows: dict) -> list[tuple[tuple[str, str, str], str, np.ndarray]]:
        """((model_id, timeframe, role), model_type, row indices in order) of each group."""
        if not len(rows["slot"]):
            return []
        key = self._models.id_code[rows["model"]] * (1 << 40) + self._ring.step[rows["slot"]]
        firsts, inverse = np.unique(key, return_index=True, return_inverse=True)[1:]
        groups = []
        for g, i in enumerate(firsts.tolist()):
            model_id, _, model_type, role = self._models.models[rows["model"][i]]
            timeframe = str(self._ring.columns["timeframe"][rows["slot"][i]])
            groups.append(((model_id, timeframe, role), model_type, np.flatnonzero(inverse == g)))
        return groups

    def _count(self, rows: dict, kind: str) -> None:
        for key, model_type, index in self._groups(rows):
            self._totals_of(key[0], key[1], model_type, key[2])[kind] += len(index)

    def _record(self, c: dict) -> None:
        self._count(c, "scored")
        values = np.column_stack([c["hit"], c["error"], c["log_loss"], c["value"], c["realized"]])
        for key, _, index in self._groups(c):
            self._windows[key].extend(values[index])  # in outcome order
            self._totals[key]["version"] = self._models.models[c["model"][index[-1]]][1]
        self._pair(c)

    def _pair(self, c: dict) -> None:
        """The champion's and its challenger's outcomes of the same candles, scored in the
        same call (both predicted the same tick), as block sums of their loss difference."""
        production = self._models.production[c["model"]]
        if production.all() or not production.any():
            return
        series = self._models.model_id_code[c["model"]] * max(self._ring.n_slots, 1) + c["slot"]
        keys = _pair_keys(series, c["open_time"] - c["open_time"].min())
        if keys is None:
            return
        champ, chal = np.flatnonzero(production), np.flatnonzero(~production)
        order = np.argsort(keys[champ], kind="stable")
        sorted_keys = keys[champ][order]
        at = np.minimum(np.searchsorted(sorted_keys, keys[chal]), len(champ) - 1)
        found = sorted_keys[at] == keys[chal]
        chal, champ = chal[found], champ[order[at[found]]]
        if not len(chal):
            return
        loss = pair_losses(c["log_loss"], c["error"])
        for key, _, index in self._groups(_take(c, chal)):
            model_id, timeframe, role = key
            a, b = champ[index], chal[index]
            versions = (
                self._models.models[c["model"][a[-1]]][1],
                self._models.models[c["model"][b[-1]]][1],
            )
            entry = self._comparisons.get((model_id, timeframe))
            if entry is None or (entry["champion"], entry["challenger"]) != versions:
                entry = self._comparisons[(model_id, timeframe)] = {
                    "champion": versions[0],
                    "challenger": versions[1],
                    "role": role,
                    "blocks": {},
                }
            step = timeframe_ms(timeframe)
            add_blocks(entry["blocks"], block_sums(c["open_time"][b], step, loss[a], loss[b]))

    def metrics(self) -> dict:
        """{"window", "pending", "unscorable", "models": {model_id: {timeframe: stats}},
        "challengers": {model_id: {timeframe: stats with role and comparison sums}}}:
        ``models`` holds the champions (production role)."""
        models: dict[str, dict] = {}
        challengers: dict[str, dict] = {}
        for (model_id, timeframe, role), totals in sorted(self._totals.items()):
            stats = self._windows[(model_id, timeframe, role)].summary(totals["model_type"])
            if role == PRODUCTION:
                models.setdefault(model_id, {})[timeframe] = {**totals, **stats}
                continue
            comparison = self._comparisons.get((model_id, timeframe))
            challengers.setdefault(model_id, {})[timeframe] = {
                **totals,
                **stats,
                "role": role,
                "comparison": comparison
                and {
                    **{k: comparison[k] for k in ("champion", "challenger")},
                    "blocks": {str(b): list(v) for b, v in comparison["blocks"].items()},
                },
            }
        return {
            "window": self.window,
            "pending": self.pending,
            "unscorable": self.unscorable,
            "models": models,
            "challengers": challengers,
        }

    # --- snapshots -----------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {
            "version": SNAPSHOT_VERSION,
            "config": {
                "window": self.window,
                "max_pending": self.max_pending,
                "expire_after": self.expire_after,
                "history": self._ring.size,
            },
            "ring": self._ring.snapshot(),
            "pending": self._pending_snapshot(),
            "totals": {k: dict(v) for k, v in self._totals.items()},
            "windows": {k: (w.values.copy(), w.filled, w.next) for k, w in self._windows.items()},
            "comparisons": {
                k: {**v, "blocks": {b: list(s) for b, s in v["blocks"].items()}}
                for k, v in self._comparisons.items()
            },
            "unscorable": self.unscorable,
        }

    def _pending_snapshot(self) -> dict:
        """Pending rows with their ids and model strings (the format snapshots have always
        had; the codes are this process's own)."""
        rows = _concat_all([self._pending_of(0), *self._pending.values()])
        models = self._models.strings(rows["model"])
        slot = pa.array(rows["slot"], pa.int64())
        exchange, symbol, timeframe = (self._ring.arrow[k].take(slot) for k in KEY_COLUMNS)
        open_time = pa.array(rows["open_time"], pa.int64())
        ids = join_event_ids(models["prefix"], exchange, symbol, timeframe, open_time)
        strings = {"event_id": ids, **{k: models[k] for k in MODEL_COLUMNS}}
        return {
            **{k: v.to_numpy(zero_copy_only=False) for k, v in strings.items()},
            **{k: v for k, v in rows.items() if k != "model"},
        }

    @classmethod
    def from_snapshot(cls, snap: dict) -> OutcomeTracker:
        if snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"outcome snapshot version {snap.get('version')!r} is not supported")
        tracker = cls(**snap["config"])
        tracker._ring = CandleRing.from_snapshot(snap["ring"])
        saved = snap["pending"]
        pending = {
            k: np.asarray(saved[k]).astype(t) for k, t in PENDING_DTYPES.items() if k in saved
        }
        if "role" not in saved:  # a snapshot from before roles: all production
            saved = {**saved, "role": [PRODUCTION] * len(saved["model_id"])}
        pending["model"] = tracker._models.codes(
            *(pa.array(saved[k], pa.string()) for k in MODEL_COLUMNS)
        )
        steps = tracker._ring.step[pending["slot"]]
        tracker._pending = {
            step: _take(pending, steps == step) for step in np.unique(steps).tolist()
        }
        tracker._totals = {_with_role(k): dict(v) for k, v in snap["totals"].items()}
        for key, (values, filled, nxt) in snap["windows"].items():
            window = tracker._windows[_with_role(key)] = RollingOutcomes(len(values))
            window.restore(values, filled, nxt)
        tracker._comparisons = {
            tuple(k): {**v, "blocks": {b: list(s) for b, s in v["blocks"].items()}}
            for k, v in snap.get("comparisons", {}).items()
        }
        tracker.unscorable = snap["unscorable"]
        return tracker


def _with_role(key: tuple) -> tuple[str, str, str]:
    """A metrics key; a snapshot from before roles keyed (model_id, timeframe): production."""
    return (key[0], key[1], key[2] if len(key) > 2 else PRODUCTION)
