"""Probability calibration: reliability curves, expected calibration error, and the
isotonic map a direction model's P(up) goes through (pure).

A model's raw probabilities can be systematically off (a tree ensemble's P(up) of 0.55 may
come true 52% of the time). ``tickcast train`` fits an isotonic map from raw to observed
frequency on the walk-forward folds' out-of-sample predictions and stores it in the
manifest (``calibration``: the map's knots, one per block of the fit holding at least 1% of
the rows, at the block's mean raw P, so the map's slope stays a few units); every
predictor (ONNX Runtime, compiled trees; live, HTTP and backfill alike) applies it to the
primary output with ``np.interp``. Whether a model is calibrated is decided out of sample:
the map is kept only when, fitted on earlier folds, it lowers the expected calibration
error on the later ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Calibration:
    """One reliability curve: per non-empty bin, mean prediction, observed rate, rows."""

    name: str
    predicted: np.ndarray
    observed: np.ndarray
    counts: np.ndarray

    @property
    def ece(self) -> float:
        weights = self.counts / self.counts.sum()
        return float((weights * np.abs(self.observed - self.predicted)).sum())


def calibration(
    name: str, y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS
) -> Calibration:
    """Reliability curve of probabilities ``p`` for the 0/1 outcomes ``y``: quantile bins
    (equal counts, so a model whose probabilities hug 0.5 still gets a curve; a value on an
    inner edge belongs to the lower bin); the expected calibration error (ECE) is the
    count-weighted mean absolute gap between mean prediction and observed rate."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    edges = np.quantile(p, np.linspace(0.0, 1.0, bins + 1))
    index = np.searchsorted(edges[1:-1], p, side="left")
    counts = np.bincount(index, minlength=bins)
    filled = counts > 0
    mean_p = np.bincount(index, weights=p, minlength=bins)[filled] / counts[filled]
    rate = np.bincount(index, weights=y, minlength=bins)[filled] / counts[filled]
    return Calibration(name, mean_p, rate, counts[filled])


def ece(y: np.ndarray, p: np.ndarray) -> float:
    return calibration("", y, p).ece


# Probabilities are kept off 0 and 1: a calibrated 0 would give an infinite log loss.
P_FLOOR = 1e-4
MIN_BLOCK_ROWS = 50


def fit_isotonic(p: np.ndarray, y: np.ndarray) -> dict:
    """The isotonic (non-decreasing) map from raw ``p`` to the observed rate of ``y``, as
    knots for ``np.interp`` (flat beyond the outermost knots).

    One knot per block of the isotonic fit, at the mean raw ``p`` of the block's rows, with
    the block's rate: a monotone line through the block centres. The step function's own
    knots (both ends of every block) put consecutive blocks a hair apart, and linear
    interpolation between them has slopes above 100,000: float rounding that two engines
    are allowed (1e-7 in P) would become a different calibrated probability.
    """
    from sklearn.isotonic import IsotonicRegression  # training-time only

    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=P_FLOOR, y_max=1.0 - P_FLOOR)
    fitted = iso.fit_transform(p, y)
    rates, block = np.unique(fitted, return_inverse=True)  # non-decreasing: one rate a block
    rows = np.bincount(block)
    sums = np.bincount(block, weights=p)
    # Blocks of a few rows are noise and sit close together: merge neighbours until each
    # knot stands for at least 1% of the rows (a weighted mean of neighbouring rates stays
    # between them, so the map stays monotone).
    least = max(MIN_BLOCK_ROWS, len(p) // 100)
    xs, ys, count, p_sum, y_sum = [], [], 0, 0.0, 0.0
    for n, total, rate in zip(rows, sums, rates, strict=True):
        count, p_sum, y_sum = count + n, p_sum + total, y_sum + rate * n
        if count >= least:
            xs.append(p_sum / count)
            ys.append(y_sum / count)
            count, p_sum, y_sum = 0, 0.0, 0.0
    if count:  # the remainder joins the last knot (or is the only one)
        if xs:
            n_last = least  # the last knot's weight is at least this: a fair blend
            xs[-1] = (xs[-1] * n_last + p_sum) / (n_last + count)
            ys[-1] = (ys[-1] * n_last + y_sum) / (n_last + count)
        else:
            xs.append(p_sum / count)
            ys.append(y_sum / count)
    return {"method": "isotonic", "x": [float(v) for v in xs], "y": [float(v) for v in ys]}


def max_slope(spec: dict | None) -> float:
    """The steepest stretch of a map: how much it can magnify a difference in raw P."""
    if not spec or spec.get("method") != "isotonic" or len(spec["x"]) < 2:
        return 1.0
    dx, dy = np.diff(spec["x"]), np.diff(spec["y"])
    return float(max(1.0, np.max(dy / np.where(dx > 0, dx, np.inf))))


def apply_map(spec: dict | None, p: np.ndarray) -> np.ndarray:
    """``p`` through a stored map (unchanged without one)."""
    if not spec or spec.get("method") != "isotonic":
        return p
    return np.interp(p, spec["x"], spec["y"])


def calibrate_values(spec: dict | None, values: np.ndarray) -> np.ndarray:
    """A predictor's (n, k) outputs with the primary column (0: P(up)) calibrated."""
    if not spec or spec.get("method") != "isotonic" or values.shape[0] == 0:
        return values
    values = values.copy()
    values[:, 0] = apply_map(spec, values[:, 0])
    return values


def out_of_sample_calibration(
    fold_p: list[np.ndarray], fold_y: list[np.ndarray]
) -> tuple[dict, np.ndarray]:
    """Decide and fit a model's calibration from its walk-forward folds' out-of-sample
    predictions (oldest fold first): each fold after the first is calibrated by a map
    fitted on the folds before it; the ECE over those folds before and after says whether
    calibration helps. Returns the calibration (the map fitted on every fold; ``method``
    ``none`` when calibrating made the held-out ECE no better, or the map would be a
    constant) and the held-out folds' predictions as the model will serve them (calibrated
    out of sample, or raw)."""
    raw, calibrated, truth = [], [], []
    for k in range(1, len(fold_p)):
        spec = fit_isotonic(np.concatenate(fold_p[:k]), np.concatenate(fold_y[:k]))
        raw.append(fold_p[k])
        calibrated.append(apply_map(spec, fold_p[k]))
        truth.append(fold_y[k])
    y = np.concatenate(truth)
    before, after = ece(y, np.concatenate(raw)), ece(y, np.concatenate(calibrated))
    evidence = {
        "measured_on": "walk-forward folds 2.. (each calibrated by a map fitted on the folds "
        f"before it), {len(y)} rows, {CALIBRATION_BINS} quantile bins",
        "ece_before": before,
        "ece_after": after,
    }
    spec = fit_isotonic(np.concatenate(fold_p), np.concatenate(fold_y))
    # One knot would be a constant: every row the same probability, the model's ranking
    # thrown away (a base rate, not a calibration).
    if after >= before or len(spec["x"]) < 2:
        return {"method": "none", **evidence}, np.concatenate(raw)
    return {**spec, **evidence}, np.concatenate(calibrated)
