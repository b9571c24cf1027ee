"""Walk-forward folds are time-ordered, never shuffled, and never leak labels into tests."""

import numpy as np
import pytest

from orchestrator.models.labels import LABEL_SPECS
from orchestrator.models.training.datasets import labelled_candles, model_data, pool_symbols
from orchestrator.models.training.walk_forward import time_holdout, walk_forward_folds
from tests.unit.models.helpers import MINUTE_MS, random_candles


def _pooled_times(n_symbols=4, n=1_000):
    """Several symbols over overlapping (not identical) time ranges, pooled by time."""
    times = np.concatenate([MINUTE_MS * (np.arange(n) + 37 * s) for s in range(n_symbols)])
    return np.sort(times, kind="stable")


@pytest.mark.parametrize("purge_candles", [0, 1, 10])
def test_folds_are_expanding_ordered_and_purged(purge_candles):
    open_time = _pooled_times()
    purge_ms = purge_candles * MINUTE_MS
    folds = walk_forward_folds(open_time, purge_ms, n_folds=3)
    assert len(folds) == 3
    previous_test_end = -np.inf
    for fold in folds:
        assert np.all(np.diff(fold.train) > 0) and np.all(np.diff(fold.test) > 0)  # never shuffled
        test_start = open_time[fold.test].min()
        assert test_start > previous_test_end  # test slices follow each other in time
        previous_test_end = open_time[fold.test].max()
        # No training label reads a candle of the test period.
        assert open_time[fold.train].max() + purge_ms < test_start
        # Expanding: every row early enough is used.
        assert len(fold.train) == np.sum(open_time + purge_ms < fold.test_start)
    tested = np.concatenate([f.test for f in folds])
    assert len(np.unique(tested)) == len(tested)  # disjoint
    assert open_time[tested].min() >= np.quantile(open_time, 0.5)
    assert open_time[tested].max() == open_time.max()  # the latest rows are tested


def test_purge_removes_exactly_the_rows_whose_labels_reach_the_test():
    open_time = _pooled_times()
    loose = walk_forward_folds(open_time, 0)
    purged = walk_forward_folds(open_time, 10 * MINUTE_MS)
    for a, b in zip(loose, purged, strict=True):
        np.testing.assert_array_equal(a.test, b.test)
        dropped = np.setdiff1d(a.train, b.train)
        assert len(dropped) > 0
        assert np.all(open_time[dropped] + 10 * MINUTE_MS >= a.test_start)


def test_real_label_horizons_never_reach_into_the_test_period():
    tables = {f"S{i}": labelled_candles(random_candles(900, seed=i), MINUTE_MS) for i in range(3)}
    data = pool_symbols(tables, "1m", MINUTE_MS, "synthetic")
    for model_type, spec in LABEL_SPECS.items():
        rows = model_data(data, model_type)
        assert rows.purge_ms == spec.horizon * MINUTE_MS
        for fold in walk_forward_folds(rows.open_time, rows.purge_ms):
            last_candle_read = rows.open_time[fold.train] + spec.horizon * MINUTE_MS
            assert last_candle_read.max() < rows.open_time[fold.test].min()


def test_time_holdout_is_purged_and_late():
    open_time = _pooled_times()
    early, late = time_holdout(open_time, 5 * MINUTE_MS, 0.3)
    assert open_time[early].max() + 5 * MINUTE_MS < open_time[late].min()
    assert len(late) == pytest.approx(0.3 * len(open_time), rel=0.02)


def test_too_few_times_is_a_clear_error():
    with pytest.raises(ValueError, match="walk-forward"):
        walk_forward_folds(np.zeros(50, dtype=np.int64), 0)
