"""Evaluation metrics against scikit-learn, and the strategy on hand-checkable series."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    log_loss,
    mean_absolute_error,
    roc_auc_score,
)

from orchestrator.batch.evaluation.metrics import calibration, score_model
from orchestrator.batch.evaluation.strategy import portfolio, run_strategy, series_returns

RNG = np.random.default_rng(11)


def _binary(n=2000):
    p = np.clip(RNG.normal(0.5, 0.05, n), 0.01, 0.99)
    y = (RNG.uniform(size=n) < p).astype(np.float64)
    return y, p


@pytest.mark.parametrize("bins", [5, 10])
def test_calibration_matches_scikit_learn_quantile_bins(bins):
    y, p = _binary()
    p[:50] = np.round(p[:50], 2)  # ties on bin edges
    curve = calibration("P(up)", y, p, bins)
    observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    np.testing.assert_allclose(curve.observed, observed, rtol=1e-12)
    np.testing.assert_allclose(curve.predicted, predicted, rtol=1e-12)
    assert curve.counts.sum() == len(y)
    gaps = np.abs(observed - predicted) * curve.counts / len(y)
    assert curve.ece == pytest.approx(gaps.sum(), rel=1e-12)


def test_direction_scores_and_base_rate_baseline_match_scikit_learn():
    y, p = _binary()
    realized = np.r_[y, np.nan]  # an unknown label is left out
    scores = score_model(
        "direction",
        realized,
        np.r_[p, 0.9],
        np.full(len(y) + 1, np.nan),
        np.full(len(y) + 1, np.nan),
    )
    assert scores.rows == len(y)
    assert scores.model["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5))
    assert scores.model["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert scores.model["brier"] == pytest.approx(brier_score_loss(y, p))
    assert scores.model["log_loss"] == pytest.approx(log_loss(y, p))
    rate = np.full(len(y), y.mean())
    assert scores.baseline["brier"] == pytest.approx(brier_score_loss(y, rate))
    assert scores.baseline["log_loss"] == pytest.approx(log_loss(y, rate))
    assert scores.baseline["roc_auc"] == pytest.approx(0.5)
    assert scores.baseline["accuracy"] == pytest.approx(max(y.mean(), 1 - y.mean()))
    assert scores.baseline["ece"] == pytest.approx(0.0, abs=1e-12)
    assert scores.beats_baseline == (
        scores.model["brier"] < scores.baseline["brier"]
        and scores.model["log_loss"] < scores.baseline["log_loss"]
    )


def test_swing_scores_match_scikit_learn_one_vs_rest():
    n = 3000
    y = RNG.choice([0.0, 1.0, 2.0], size=n, p=[0.8, 0.1, 0.1])
    p_high = np.clip(0.1 + 0.3 * (y == 1) + RNG.normal(0, 0.05, n), 0.001, 0.6)
    p_low = np.clip(0.1 + 0.3 * (y == 2) + RNG.normal(0, 0.05, n), 0.001, 0.39)
    scores = score_model("swing", y, p_high, p_low, np.full(n, np.nan))
    proba = np.column_stack([1 - p_high - p_low, p_high, p_low])
    assert scores.model["accuracy"] == pytest.approx(accuracy_score(y, proba.argmax(axis=1)))
    assert scores.model["roc_auc"] == pytest.approx(
        roc_auc_score(y, proba, multi_class="ovr", average="macro")
    )
    assert scores.model["log_loss"] == pytest.approx(log_loss(y, proba))
    onehot = np.eye(3)[y.astype(int)]
    assert scores.model["brier"] == pytest.approx(((proba - onehot) ** 2).sum(axis=1).mean())
    shares = np.bincount(y.astype(int), minlength=3) / n
    assert scores.baseline["log_loss"] == pytest.approx(log_loss(y, np.tile(shares, (n, 1))))
    assert [c.name for c in scores.calibrations] == ["P(swing high)", "P(swing low)"]


def test_regressor_scores_beside_their_row_wise_baseline():
    n = 500
    y = RNG.gamma(2.0, 0.001, n)
    pred, naive = y + RNG.normal(0, 0.0002, n), y + RNG.normal(0, 0.001, n)
    naive[:5] = np.nan  # no history yet: those rows are left out of both
    scores = score_model("volatility", y, pred, np.full(n, np.nan), naive)
    assert scores.rows == n - 5
    assert scores.model["mae"] == pytest.approx(mean_absolute_error(y[5:], pred[5:]))
    assert scores.baseline["rmse"] == pytest.approx(np.sqrt(np.mean((naive[5:] - y[5:]) ** 2)))
    assert scores.beats_baseline is True
    assert (
        score_model("return", np.full(3, np.nan), np.zeros(3), np.zeros(3), np.zeros(3)).rows == 0
    )


def test_strategy_returns_by_hand():
    # closes 100 -> 110 -> 99 -> 99: next log returns per candle, the last unknown
    r = np.array([math.log(1.1), math.log(0.9), 0.0, np.nan])
    signal = np.array(["LONG", "SHORT", "NEUTRAL", "LONG"], dtype=object)
    result = run_strategy(np.zeros(4, np.int64), np.arange(4), signal, r, fee=0.001)
    s = result.summary()
    assert s["gross_return"] == pytest.approx(1.1 * 1.1 - 1)  # long +10%, short a -10% move
    fees = 0.999 * 0.998 * 0.999 * 0.999  # buy 1, reverse (2 units), sell 1, buy 1
    assert s["net_return"] == pytest.approx(1.21 * fees - 1)
    assert s["hold_return"] == pytest.approx(0.99 - 1)
    assert s["trades"] == 5 and s["exposure"] == 0.75 and s["series"] == 1


def test_portfolio_averages_series_at_each_time():
    a = series_returns(np.array([1.0, 1.0]), np.log([1.2, 1.0]), fee=0.0)
    b = series_returns(np.array([-1.0]), np.log([1.1]), fee=0.0)
    joined = type(a)(
        *(np.r_[getattr(a, f), getattr(b, f)] for f in ("gross", "net", "hold", "trades"))
    )
    curves = portfolio(np.array([0, 60, 0]), joined)
    np.testing.assert_array_equal(curves.times, [0, 60])
    # t=0: mean(+20%, -10%) = +5%; t=60: only a, 0%
    np.testing.assert_allclose(curves.gross, [1.05, 1.05])
    np.testing.assert_allclose(curves.hold, [1 + (0.2 + 0.1) / 2, 1.15])
    by_series = run_strategy(
        np.array([0, 0, 1]),
        np.array([0, 60, 0]),
        np.array(["LONG", "LONG", "SHORT"], dtype=object),
        np.log([1.2, 1.0, 1.1]),
        fee=0.0,
    )
    np.testing.assert_allclose(by_series.curves.gross, curves.gross)
