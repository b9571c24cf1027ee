"""Our metrics agree with scikit-learn's on toy data."""

import numpy as np
import pytest
from sklearn import metrics as sk

from orchestrator.models.training.metrics import (
    beats_baseline,
    binary_metrics,
    class_frequencies,
    multiclass_metrics,
    pearson,
    regression_metrics,
    roc_auc,
)


def test_binary_metrics_match_sklearn_including_tied_scores():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.round(np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.2, 300), 0.01, 0.99), 1)
    ours = binary_metrics(y, p)
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(y, p >= 0.5))
    assert ours["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p), rel=1e-12)
    assert ours["brier"] == pytest.approx(sk.brier_score_loss(y, p), rel=1e-12)
    assert ours["log_loss"] == pytest.approx(sk.log_loss(y, p), rel=1e-12)


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 400)
    proba = rng.dirichlet([2, 2, 2], 400)
    proba[np.arange(400), y] += 0.3
    proba /= proba.sum(axis=1, keepdims=True)
    ours = multiclass_metrics(y, proba)
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(y, proba.argmax(axis=1)))
    expected_auc = sk.roc_auc_score(y, proba, multi_class="ovr")
    assert ours["roc_auc"] == pytest.approx(expected_auc, rel=1e-12)
    assert ours["brier"] == pytest.approx(sk.brier_score_loss(y, proba), rel=1e-12)
    assert ours["log_loss"] == pytest.approx(sk.log_loss(y, proba), rel=1e-12)
    for k in range(3):
        assert ours[f"roc_auc_class_{k}"] == pytest.approx(sk.roc_auc_score(y == k, proba[:, k]))


def test_regression_metrics_match_sklearn_and_numpy():
    rng = np.random.default_rng(3)
    y = rng.normal(0, 1e-3, 500)
    pred = 0.3 * y + rng.normal(0, 1e-3, 500)
    ours = regression_metrics(y, pred)
    assert ours["mae"] == pytest.approx(sk.mean_absolute_error(y, pred), rel=1e-12)
    assert ours["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(y, pred)), rel=1e-12)
    assert ours["corr"] == pytest.approx(np.corrcoef(y, pred)[0, 1], rel=1e-10)


def test_undefined_metrics_are_none():
    assert roc_auc(np.ones(5), np.linspace(0, 1, 5)) is None
    assert pearson(np.arange(5.0), np.zeros(5)) is None
    assert regression_metrics(np.arange(5.0), np.zeros(5))["corr"] is None


def test_baselines_and_the_criterion():
    np.testing.assert_allclose(class_frequencies(np.array([0, 2, 2, 1]), 3), [0.25, 0.25, 0.5])
    better = {"log_loss": 0.6, "brier": 0.2}
    assert beats_baseline(better, {"log_loss": 0.7, "brier": 0.25})
    assert not beats_baseline(better, {"log_loss": 0.7, "brier": 0.19})
    assert not beats_baseline({"mae": 1.0, "rmse": 2.0}, {"mae": 1.0, "rmse": 3.0})
