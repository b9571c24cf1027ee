"""Feature drift: running moments, training histograms and the population stability index.

A model stores its training distribution (``training_distribution``: per-feature quantile
bin edges, counts, mean, std, as plain JSON-able data). Live rows are counted into the
same bins (``RunningHistograms``) and summarized (``RunningMoments``); both are vectorized
over features, mergeable across shards and snapshot as plain data. PSI per feature then
compares live counts with training counts. NaN values (not warm, missing taker volume)
are skipped everywhere: they are absence, not a value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from orchestrator.features.specs import FEATURE_NAMES

# Empty bins get this share so PSI stays finite (a common convention; 1e-4 = 0.01 %).
PSI_FLOOR = 1e-4


class RunningMoments:
    """Count, mean and M2 per feature (Chan et al.'s parallel update); NaNs skipped."""

    def __init__(self, n_features: int = len(FEATURE_NAMES)):
        self.count = np.zeros(n_features, dtype=np.int64)
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)

    def update(self, rows: np.ndarray) -> None:
        """Fold a (n, n_features) block of rows in."""
        x = np.asarray(rows, dtype=np.float64).reshape(-1, self.count.shape[0])
        finite = np.isfinite(x)
        count = finite.sum(axis=0)
        safe = np.maximum(count, 1)
        mean = np.where(finite, x, 0.0).sum(axis=0) / safe
        m2 = np.where(finite, (x - mean) ** 2, 0.0).sum(axis=0)
        self._merge(count, mean, m2)

    def merge(self, other: RunningMoments) -> None:
        """Fold another accumulator in (e.g. another shard's)."""
        self._merge(other.count, other.mean, other.m2)

    def _merge(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        total = self.count + count
        safe = np.maximum(total, 1)
        delta = mean - self.mean
        self.mean = np.where(total > 0, self.mean + delta * (count / safe), 0.0)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * (count / safe))
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        """Population variance; NaN for a feature with no values yet."""
        return np.where(self.count > 0, self.m2 / np.maximum(self.count, 1), np.nan)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.variance)

    def snapshot(self) -> dict:
        return {"count": self.count.copy(), "mean": self.mean.copy(), "m2": self.m2.copy()}

    @classmethod
    def from_snapshot(cls, snap: dict) -> RunningMoments:
        out = cls(len(snap["count"]))
        out.count = np.array(snap["count"], dtype=np.int64)
        out.mean = np.array(snap["mean"], dtype=np.float64)
        out.m2 = np.array(snap["m2"], dtype=np.float64)
        return out


def quantile_edges(rows: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """(n_features, n_bins - 1) inner bin edges at the training quantiles of each feature.

    Bins are open-ended at both sides, so live values outside the training range still
    land in the first or last bin. Repeated edges (a feature with few distinct values)
    are kept: the empty bins they make are empty in training and live alike.
    A feature with no finite training value gets NaN edges (and PSI NaN).
    """
    if n_bins < 2:
        raise ValueError("n_bins must be at least 2")
    x = np.asarray(rows, dtype=np.float64)
    q = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    edges = np.full((x.shape[1], n_bins - 1), np.nan)
    for f in range(x.shape[1]):
        col = x[:, f][np.isfinite(x[:, f])]
        if col.size:
            edges[f] = np.quantile(col, q)
    return edges


def histogram_counts(rows: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(n_features, n_bins) counts of the finite values of each feature in its bins."""
    x = np.asarray(rows, dtype=np.float64).reshape(-1, edges.shape[0])
    n_bins = edges.shape[1] + 1
    counts = np.zeros((edges.shape[0], n_bins), dtype=np.int64)
    for f in range(edges.shape[0]):
        if np.isnan(edges[f]).any():
            continue
        col = x[:, f][np.isfinite(x[:, f])]
        bins = np.searchsorted(edges[f], col, side="right")
        counts[f] = np.bincount(bins, minlength=n_bins)
    return counts


def population_stability_index(
    expected_hist: np.ndarray, actual_hist: np.ndarray, floor: float = PSI_FLOOR
) -> np.ndarray | float:
    """PSI = sum((a - e) * ln(a / e)) over bins of the two histograms' shares.

    Works on one histogram (returns a float) or a stack (last axis = bins). Shares below
    ``floor`` are raised to it so empty bins stay finite; an empty histogram gives NaN.
    Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.
    """
    e = _shares(expected_hist, floor)
    a = _shares(actual_hist, floor)
    psi = np.sum((a - e) * np.log(a / e), axis=-1)
    return float(psi) if np.ndim(psi) == 0 else psi


def _shares(hist: np.ndarray, floor: float) -> np.ndarray:
    h = np.asarray(hist, dtype=np.float64)
    total = h.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(total > 0, h / total, np.nan)
    return np.maximum(shares, floor)


class RunningHistograms:
    """Live counts in a model's training bins; mergeable and snapshot-able."""

    def __init__(self, edges: np.ndarray):
        self.edges = np.asarray(edges, dtype=np.float64)
        self.counts = np.zeros((self.edges.shape[0], self.edges.shape[1] + 1), dtype=np.int64)

    def update(self, rows: np.ndarray) -> None:
        self.counts += histogram_counts(rows, self.edges)

    def merge(self, other: RunningHistograms) -> None:
        if not np.array_equal(self.edges, other.edges, equal_nan=True):
            raise ValueError("cannot merge histograms with different bin edges")
        self.counts += other.counts

    def snapshot(self) -> dict:
        return {"edges": self.edges.copy(), "counts": self.counts.copy()}

    @classmethod
    def from_snapshot(cls, snap: dict) -> RunningHistograms:
        out = cls(snap["edges"])
        out.counts = np.array(snap["counts"], dtype=np.int64)
        return out


def training_distribution(
    rows: np.ndarray, feature_names: Sequence[str] = FEATURE_NAMES, n_bins: int = 10
) -> dict:
    """A model's training distribution as plain JSON-able data (lists, floats, ints)."""
    x = np.asarray(rows, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(feature_names):
        raise ValueError(f"rows must be (n, {len(feature_names)}), got {x.shape}")
    edges = quantile_edges(x, n_bins)
    moments = RunningMoments(x.shape[1])
    moments.update(x)
    return {
        "feature_names": list(feature_names),
        "edges": _json_floats(edges),
        "counts": histogram_counts(x, edges).tolist(),
        "mean": _json_floats(np.where(moments.count > 0, moments.mean, np.nan)),
        "std": _json_floats(moments.std),
    }


def drift_psi(distribution: dict, live_counts: np.ndarray) -> dict[str, float]:
    """PSI per feature of live counts (in the distribution's bins) against training."""
    psi = population_stability_index(np.asarray(distribution["counts"]), live_counts)
    return dict(zip(distribution["feature_names"], np.atleast_1d(psi).tolist(), strict=True))


def distribution_edges(distribution: dict) -> np.ndarray:
    """The bin edges of a stored distribution as an array (None entries back to NaN)."""
    return np.array(distribution["edges"], dtype=np.float64)


def _json_floats(a: np.ndarray) -> list:
    """Nested lists of floats with NaN as None, so the result survives strict JSON."""
    if a.ndim > 1:
        return [_json_floats(row) for row in a]
    return [float(v) if np.isfinite(v) else None for v in a]


class DriftMonitor:
    """Live histograms of one timeframe's feature rows, in a model's training bins.

    Rows arrive in ``FEATURE_NAMES`` order; the monitor keeps the columns the stored
    distribution describes. Counts from several shards add up (``counts``), and
    ``drift_psi(distribution, summed_counts)`` gives the PSI per feature; ``moments``
    (running mean and variance) merge across shards the same way.
    """

    def __init__(self, distribution: dict):
        self.distribution = distribution
        self._columns = np.array([FEATURE_NAMES.index(n) for n in distribution["feature_names"]])
        self._histograms = RunningHistograms(distribution_edges(distribution))
        self.moments = RunningMoments(len(self._columns))
        self.rows = 0

    def update(self, rows: np.ndarray) -> None:
        if len(rows):
            selected = np.asarray(rows)[:, self._columns]
            self._histograms.update(selected)
            self.moments.update(selected)
            self.rows += len(rows)

    @property
    def counts(self) -> np.ndarray:
        return self._histograms.counts

    def snapshot(self) -> dict:
        return {
            "feature_names": list(self.distribution["feature_names"]),
            "histograms": self._histograms.snapshot(),
            "moments": self.moments.snapshot(),
            "rows": self.rows,
        }

    def restore(self, snap: dict) -> bool:
        """Take up a snapshot's counts if it was counted in this monitor's bins (same
        features, same edges); False, and nothing changed, when the reference moved on
        (another model version's training bins): those counts would mean nothing here."""
        saved = RunningHistograms.from_snapshot(snap["histograms"])
        if list(snap["feature_names"]) != list(
            self.distribution["feature_names"]
        ) or not np.array_equal(saved.edges, self._histograms.edges, equal_nan=True):
            return False
        self._histograms = saved
        self.moments = RunningMoments.from_snapshot(snap["moments"])
        self.rows = int(snap["rows"])
        return True


def summarize_psi(psi: dict[str, float], worst: int = 3) -> dict:
    """The headline of a PSI table: the largest value and the features behind it."""
    ranked = sorted(psi.items(), key=lambda kv: -kv[1] if np.isfinite(kv[1]) else 0.0)
    return {"max_psi": ranked[0][1] if ranked else None, "worst": ranked[:worst]}
