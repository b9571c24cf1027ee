"""Out-of-sample metrics and the naive baselines every model is measured against (pure).

Classifiers: accuracy, ROC AUC, Brier score and log loss. Regressors: MAE, RMSE and
Pearson correlation. Definitions follow scikit-learn's (the tests check them against it):
binary Brier is mean (p - y)^2, multi-class Brier is the mean over rows of the squared
distance to the one-hot label; multi-class ROC AUC is the macro one-vs-rest average.
A metric that is undefined (AUC with one class, correlation of a constant) is None.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

# Probabilities are clipped away from 0 and 1 before the log, as scikit-learn does.
_EPS = np.finfo(np.float64).eps


def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count half)."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(y: np.ndarray, p_up: np.ndarray) -> dict[str, float | None]:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p_up, dtype=np.float64)
    clipped = np.clip(p, _EPS, 1 - _EPS)
    return {
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
        "roc_auc": roc_auc(y, p),
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))),
    }


def multiclass_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float | None]:
    """Metrics of (n, k) class probabilities; per-class one-vs-rest AUCs are added."""
    y, proba = np.asarray(y).astype(np.int64), np.asarray(proba, dtype=np.float64)
    onehot = np.eye(proba.shape[1])[y]
    aucs = [roc_auc(y == k, proba[:, k]) for k in range(proba.shape[1])]
    defined = [auc for auc in aucs if auc is not None]  # a class absent from y has no AUC
    picked = np.clip(proba[np.arange(len(y)), y], _EPS, 1 - _EPS)
    return {
        "accuracy": float(np.mean(proba.argmax(axis=1) == y)),
        "roc_auc": None if len(defined) < len(aucs) else float(np.mean(defined)),
        "brier": float(np.mean(((proba - onehot) ** 2).sum(axis=1))),
        "log_loss": float(-np.mean(np.log(picked))),
        **{f"roc_auc_class_{k}": auc for k, auc in enumerate(aucs)},
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    error = pred - y
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "corr": pearson(y, pred),
    }


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else None


# --- baselines: what a model must beat to be worth serving ---------------------------------

BASELINE_NAMES = {
    "direction": "majority class (training base rate as the probability)",
    "swing": "class frequencies of the training set (majority class for accuracy)",
    "volatility": "historical volatility (std of the last N log returns, N = label horizon)",
    "return": "persistence (price unchanged: predicted log return 0)",
}
CRITERIA = {
    "classifier": "log loss and Brier score both below the baseline's",
    "regressor": "MAE and RMSE both below the baseline's",
}


def class_frequencies(y_train: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes,) share of each class in the training labels."""
    counts = np.bincount(np.asarray(y_train).astype(np.int64), minlength=n_classes)
    return counts / counts.sum()


def beats_baseline(model: dict, baseline: dict) -> bool:
    """Lower on both error measures of the task (classifier or regressor keys)."""
    keys = ("log_loss", "brier") if "log_loss" in model else ("mae", "rmse")
    return all(model[k] < baseline[k] for k in keys)
