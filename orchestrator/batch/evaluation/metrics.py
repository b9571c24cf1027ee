"""Each model's metrics over a backfilled range, beside its naive baseline (pure).

The metric definitions are training's (``orchestrator.models.training.metrics``: accuracy, ROC
AUC, Brier, log loss; MAE, RMSE, correlation), applied to rows whose realized label is
known. Baselines:

* direction: a constant P(up) equal to the range's own share of up candles (it knows the
  range's base rate, so it is a stronger baseline than any constant a forecaster could
  have chosen beforehand; its accuracy is the majority class's);
* swing: the range's class frequencies, likewise;
* volatility: historical volatility (std of the last N log returns, N = label horizon);
* return: persistence (log return 0).

Calibration: predictions cut into ``CALIBRATION_BINS`` quantile bins (equal counts, so a
model whose probabilities hug 0.5 still gets a curve); per bin the mean predicted
probability and the observed frequency; the expected calibration error (ECE) is their
count-weighted mean absolute gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orchestrator.models.calibration import Calibration, calibration
from orchestrator.models.scoring import CLASSIFIERS
from orchestrator.models.training import metrics as m


@dataclass(frozen=True)
class ModelScores:
    """Metrics of one model version over the range, and of its baseline on the same rows."""

    model_type: str
    rows: int
    model: dict
    baseline: dict
    calibrations: tuple[Calibration, ...] = field(default=())

    @property
    def beats_baseline(self) -> bool | None:
        if not self.rows:
            return None
        return m.beats_baseline(self.model, self.baseline)


def score_model(
    model_type: str,
    realized: np.ndarray,
    value: np.ndarray,
    p_low: np.ndarray,
    baseline: np.ndarray,
) -> ModelScores:
    """Scores of the rows whose label (and, for regressors, baseline) is known."""
    known = np.isfinite(realized)
    if model_type not in CLASSIFIERS:
        known &= np.isfinite(baseline)
    y, value, p_low, baseline = realized[known], value[known], p_low[known], baseline[known]
    if not len(y):
        return ModelScores(model_type, 0, {}, {})
    if model_type == "direction":
        return _direction(y, value)
    if model_type == "swing":
        return _swing(y, value, p_low)
    return ModelScores(
        model_type, len(y), m.regression_metrics(y, value), m.regression_metrics(y, baseline)
    )


def _direction(y: np.ndarray, p_up: np.ndarray) -> ModelScores:
    curve = calibration("P(up)", y, p_up)
    base_rate = np.full(len(y), y.mean())
    model = {**m.binary_metrics(y, p_up), "ece": curve.ece}
    baseline = {**m.binary_metrics(y, base_rate), "ece": calibration("", y, base_rate).ece}
    return ModelScores("direction", len(y), model, baseline, (curve,))


def swing_probabilities(p_high: np.ndarray, p_low: np.ndarray) -> np.ndarray:
    """(n, 3) class probabilities none/high/low, as live scoring forms them."""
    p_low = np.nan_to_num(p_low, nan=0.0)
    return np.clip(np.column_stack([1.0 - p_high - p_low, p_high, p_low]), 0.0, 1.0)


def _swing(y: np.ndarray, p_high: np.ndarray, p_low: np.ndarray) -> ModelScores:
    proba = swing_probabilities(p_high, p_low)
    curves = (
        calibration("P(swing high)", y == 1, proba[:, 1]),
        calibration("P(swing low)", y == 2, proba[:, 2]),
    )
    shares = m.class_frequencies(y, 3)
    constant = np.tile(shares, (len(y), 1))
    model = {**_headline(m.multiclass_metrics(y, proba)), "ece": _mean_ece(curves)}
    base_curves = (calibration("", y == 1, constant[:, 1]), calibration("", y == 2, constant[:, 2]))
    baseline = {**_headline(m.multiclass_metrics(y, constant)), "ece": _mean_ece(base_curves)}
    return ModelScores("swing", len(y), model, baseline, curves)


def _headline(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("accuracy", "roc_auc", "brier", "log_loss")}


def _mean_ece(curves: tuple[Calibration, ...]) -> float:
    return float(np.mean([c.ece for c in curves]))
