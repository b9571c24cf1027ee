"""Time-ordered validation splits: walk-forward folds and a purged holdout (pure).

Rows are never shuffled. A training row whose label reads candles at or after the first
test candle is purged (its label would tell the model about the test period): a row at
``t`` with a label horizon of ``h`` candles of ``step_ms`` reads candles up to
``t + h * step_ms``, so it trains only when that is before the test start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The first half of the data is only ever training data: every fold has at least that much.
FIRST_TEST_QUANTILE = 0.5
N_FOLDS = 3


@dataclass(frozen=True)
class Fold:
    train: np.ndarray  # row indices, increasing
    test: np.ndarray  # row indices, increasing
    test_start: float  # open time (ms) where the test period begins

    def describe(self, open_time: np.ndarray) -> dict:
        return {
            "train_rows": int(len(self.train)),
            "test_rows": int(len(self.test)),
            "test_first_open_ms": int(open_time[self.test].min()),
            "test_last_open_ms": int(open_time[self.test].max()),
        }


def walk_forward_folds(
    open_time: np.ndarray,
    purge_ms: int,
    n_folds: int = N_FOLDS,
    first_test_quantile: float = FIRST_TEST_QUANTILE,
) -> list[Fold]:
    """Expanding-window folds: test on consecutive time slices of the last part of the
    data, train on everything before each slice (minus purged rows)."""
    open_time = np.asarray(open_time)
    cutoffs = np.quantile(open_time, np.linspace(first_test_quantile, 1.0, n_folds + 1))
    folds = []
    for k, (lo, hi) in enumerate(zip(cutoffs[:-1], cutoffs[1:], strict=True)):
        in_slice = (open_time >= lo) & ((open_time <= hi) if k == n_folds - 1 else (open_time < hi))
        train = purged_before(open_time, lo, purge_ms)
        folds.append(Fold(train, np.flatnonzero(in_slice), float(lo)))
    if any(len(f.test) == 0 or len(f.train) == 0 for f in folds):
        raise ValueError(f"too few distinct times for {n_folds} walk-forward folds")
    return folds


def purged_before(open_time: np.ndarray, start: float, purge_ms: int) -> np.ndarray:
    """Rows whose label window (open time + purge_ms) ends before ``start``."""
    return np.flatnonzero(np.asarray(open_time) + purge_ms < start)


def time_holdout(
    open_time: np.ndarray, purge_ms: int, late_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """(early rows, late rows): the last ``late_fraction`` of time is held out, early rows
    are purged like a walk-forward fold's training set. Used to fit a stacker's
    meta-learner on predictions its base learners made out of sample."""
    start = float(np.quantile(open_time, 1.0 - late_fraction))
    return purged_before(open_time, start, purge_ms), np.flatnonzero(np.asarray(open_time) >= start)
