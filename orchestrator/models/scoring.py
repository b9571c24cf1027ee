"""The per-row scoring rules, one per model type, vectorized (pure).

Live outcome scoring (``orchestrator.stream.outcomes``) and the backfill's outcome rows
use these, so a live outcome and a backfilled one for the same candle are the same
number; labels are computed by the training label functions, called as training calls
them.
"""

from __future__ import annotations

import numpy as np

from orchestrator.models.labels import (
    LABEL_SPECS,
    forward_volatility,
    next_direction,
    next_log_return,
    swing_points,
)

CLASSIFIERS = ("direction", "swing")
# Probabilities are clipped before the log as in orchestrator/models/training/metrics.py.
_EPS = np.finfo(np.float64).eps

# Called exactly as orchestrator/models/training/datasets.py calls them (default horizons).
LABEL_FUNCTIONS = {
    "direction": lambda close, high, low: next_direction(close),
    "return": lambda close, high, low: next_log_return(close),
    "volatility": lambda close, high, low: forward_volatility(close),
    "swing": lambda close, high, low: swing_points(high, low),
}


def binary_scores(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hit, Brier term, log loss term) of P(up) ``p`` against 0/1 labels ``y``."""
    clipped = np.clip(p, _EPS, 1 - _EPS)
    hit = ((p >= 0.5) == (y == 1)).astype(np.float64)
    log_loss = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    return hit, (p - y) ** 2, log_loss


def swing_scores(p_high: np.ndarray, p_low: np.ndarray, y: np.ndarray):
    """(hit, multi-class Brier term, log loss term) against classes 0 none, 1 high, 2 low.

    A swing model without ``p_swing_low`` in its outputs is scored as predicting no lows.
    """
    p_low = np.nan_to_num(p_low, nan=0.0)
    proba = np.clip(np.column_stack([1.0 - p_high - p_low, p_high, p_low]), 0.0, 1.0)
    label = y.astype(np.int64)
    hit = (proba.argmax(axis=1) == label).astype(np.float64)
    brier = ((proba - np.eye(3)[label]) ** 2).sum(axis=1)
    picked = np.clip(proba[np.arange(len(label)), label], _EPS, 1 - _EPS)
    return hit, brier, -np.log(picked)


def regression_scores(pred: np.ndarray, y: np.ndarray):
    """(NaN, absolute error, NaN): regressors are neither right nor wrong."""
    nan = np.full(len(y), np.nan)
    return nan, np.abs(pred - y), nan


def score(model_type: str, value: np.ndarray, p_low: np.ndarray, y: np.ndarray):
    if model_type == "swing":
        return swing_scores(value, p_low, y)
    if model_type == "direction":
        return binary_scores(value, y)
    return regression_scores(value, y)


def window_labels(
    model_type: str, close: np.ndarray, high: np.ndarray, low: np.ndarray
) -> np.ndarray:
    """Label of each (m, span) window's candle t = column ``lookback``.

    The windows are laid end to end and labelled as one series: a label reads only its own
    window, so each is what the training label function gives on the whole series.
    """
    lookback, span = LABEL_SPECS[model_type].lookback, close.shape[1]
    labels = LABEL_FUNCTIONS[model_type](close.ravel(), high.ravel(), low.ravel())
    return labels[lookback::span]
