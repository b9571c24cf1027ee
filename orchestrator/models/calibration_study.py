"""Calibration study: how well candidate calibration methods, each fitted only on what was
known before a walk-forward fold, calibrate a direction model on that fold; beside two
references no method can reach (pure: fold predictions in, one row of a table out).

The shipped method is the isotonic map of ``calibration.py``. The study asks why some
models stay above the ECE target of 0.02 after it, and whether another method would do:

- **methods** (out of sample: fitted on earlier folds, or on outcomes already known):
  ``raw`` (no map), ``isotonic`` (shipped: every earlier fold), ``isotonic, last fold``,
  ``Platt`` (a logistic fit on the raw log-odds) and ``rolling 7 days`` (the shipped map,
  then the log-odds shifted so that the last 7 days of already labelled rows would have been
  calibrated in the large: what a live recalibration from the outcome tracker could do);
- **references**: ``base rate known`` (the shipped map, then shifted so the fold's mean
  prediction equals the fold's own observed rate: the ECE left when the base rate of the
  coming weeks is known, which no forecast knows) and ``noise floor`` (the ECE of the
  shipped predictions against outcomes drawn from those very probabilities: what a
  perfectly calibrated model would measure on this many rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from orchestrator.models.calibration import apply_map, ece, fit_isotonic

ROLLING_DAYS = 7
DAY_MS = 86_400_000
NOISE_DRAWS = 20


@dataclass(frozen=True)
class FoldPredictions:
    """One model's out-of-sample raw P(up) per walk-forward fold, oldest fold first."""

    p: list[np.ndarray]
    y: list[np.ndarray]  # 0/1 outcomes
    open_ms: list[np.ndarray]  # each row's open time
    label_ms: int  # a row's outcome is known this long after its open time


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(p, 1e-4, 1.0 - 1e-4)
    return np.log(p / (1.0 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _shipped(folds: FoldPredictions, k: int) -> dict:
    return fit_isotonic(np.concatenate(folds.p[:k]), np.concatenate(folds.y[:k]))


def _isotonic(folds: FoldPredictions, k: int) -> np.ndarray:
    return apply_map(_shipped(folds, k), folds.p[k])


def _isotonic_last_fold(folds: FoldPredictions, k: int) -> np.ndarray:
    return apply_map(fit_isotonic(folds.p[k - 1], folds.y[k - 1]), folds.p[k])


def _platt(folds: FoldPredictions, k: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression  # training-time only

    x = _logit(np.concatenate(folds.p[:k]))[:, None]
    fit = LogisticRegression(C=1e6).fit(x, np.concatenate(folds.y[:k]))
    return fit.predict_proba(_logit(folds.p[k])[:, None])[:, 1]


def _rolling(folds: FoldPredictions, k: int) -> np.ndarray:
    """The shipped map, then each row's log-odds shifted by the gap between observed rate and
    mean calibrated P over the rows of the last ROLLING_DAYS whose outcome was known at the
    row's open time (this fold's and the previous fold's rows, through the same map)."""
    spec = _shipped(folds, k)
    served = apply_map(spec, folds.p[k])
    times = np.concatenate(folds.open_ms[k - 1 : k + 1])
    order = np.argsort(times, kind="stable")
    times = times[order]
    calibrated = np.concatenate([apply_map(spec, folds.p[k - 1]), served])[order]
    outcomes = np.concatenate(folds.y[k - 1 : k + 1])[order]
    sum_p = np.concatenate([[0.0], np.cumsum(calibrated)])
    sum_y = np.concatenate([[0.0], np.cumsum(outcomes)])
    known = folds.open_ms[k] - folds.label_ms  # rows opened before this have an outcome
    stop = np.searchsorted(times, known, side="left")
    start = np.searchsorted(times, known - ROLLING_DAYS * DAY_MS, side="left")
    rows = stop - start
    filled = rows > 0
    shift = np.zeros(len(served))
    n = rows[filled]
    observed = (sum_y[stop] - sum_y[start])[filled] / n
    predicted = (sum_p[stop] - sum_p[start])[filled] / n
    shift[filled] = _logit(observed) - _logit(predicted)
    return _sigmoid(_logit(served) + shift)


def _base_rate_known(folds: FoldPredictions, k: int) -> np.ndarray:
    """The shipped map, then one log-odds shift per fold so that its mean prediction is the
    fold's own observed rate (found by bisection: the mean is monotone in the shift)."""
    z = _logit(_isotonic(folds, k))
    rate = float(np.mean(folds.y[k]))
    lo, hi = -5.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _sigmoid(z + mid).mean() < rate else (lo, mid)
    return _sigmoid(z + (lo + hi) / 2)


Method = Callable[[FoldPredictions, int], np.ndarray]
METHODS: dict[str, Method] = {
    "raw": lambda folds, k: folds.p[k],
    "isotonic": _isotonic,
    "isotonic, last fold": _isotonic_last_fold,
    "Platt": _platt,
    f"rolling {ROLLING_DAYS} days": _rolling,
}
REFERENCES: dict[str, Method] = {"base rate known": _base_rate_known}


def study(folds: FoldPredictions, seed: int = 0) -> dict:
    """Held-out ECE of every method and reference on folds 2.. (each fold calibrated from
    what came before it), the noise floor, and every fold's observed base rate."""
    scored = range(1, len(folds.p))
    y = np.concatenate([folds.y[k] for k in scored])
    result = {
        "rows": int(len(y)),
        "base_rates": [float(np.mean(v)) for v in folds.y],
    }
    calibrated = {
        name: np.concatenate([method(folds, k) for k in scored])
        for name, method in {**METHODS, **REFERENCES}.items()
    }
    result.update({name: ece(y, p) for name, p in calibrated.items()})
    served = calibrated["isotonic"]
    rng = np.random.default_rng(seed)
    draws = [ece(rng.random(len(served)) < served, served) for _ in range(NOISE_DRAWS)]
    result["noise floor"] = float(np.mean(draws))
    return result
