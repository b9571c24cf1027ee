"""Drift statistics: running moments, training histograms, PSI."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from orchestrator.features import FEATURE_NAMES, compute_features
from orchestrator.features.drift import (
    RunningHistograms,
    RunningMoments,
    distribution_edges,
    drift_psi,
    histogram_counts,
    population_stability_index,
    quantile_edges,
    training_distribution,
)
from tests.unit.features.helpers import random_walk


def _data(n=3000, seed=0, shift=0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, (n, 4)) * np.array([1.0, 1e-4, 1e4, 3.0])
    x[rng.random((n, 4)) < 0.1] = np.nan
    return x


def test_running_moments_match_numpy_whatever_the_chunking():
    x = _data()
    moments = RunningMoments(4)
    for chunk in np.array_split(x, [1, 2, 500, 501, 2000]):
        moments.update(chunk)
    np.testing.assert_array_equal(moments.count, np.isfinite(x).sum(axis=0))
    np.testing.assert_allclose(moments.mean, np.nanmean(x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.variance, np.nanvar(x, axis=0), rtol=1e-10)
    np.testing.assert_allclose(moments.std, np.nanstd(x, axis=0), rtol=1e-10)


def test_running_moments_merge_like_one_stream_and_snapshot_as_plain_data():
    x = _data(seed=1)
    whole, left, right = RunningMoments(4), RunningMoments(4), RunningMoments(4)
    whole.update(x)
    left.update(x[:1234])
    right.update(x[1234:])
    left.merge(right)
    np.testing.assert_array_equal(left.count, whole.count)
    np.testing.assert_allclose(left.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(left.variance, whole.variance, rtol=1e-10)
    restored = RunningMoments.from_snapshot(pickle.loads(pickle.dumps(left.snapshot())))
    np.testing.assert_array_equal(restored.m2, left.m2)


def test_running_moments_of_a_feature_never_seen_are_nan():
    moments = RunningMoments(2)
    moments.update(np.array([[1.0, np.nan], [3.0, np.nan]]))
    assert moments.mean[0] == 2.0 and moments.variance[0] == 1.0
    assert moments.count[1] == 0 and np.isnan(moments.variance[1])


def test_psi_is_zero_for_identical_shares_and_matches_the_formula():
    assert population_stability_index([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-15)
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert population_stability_index([50, 50], [90, 10]) == pytest.approx(expected, rel=1e-12)
    assert population_stability_index([50, 50], [90, 10]) == pytest.approx(
        population_stability_index([90, 10], [50, 50]), rel=1e-12
    )


def test_psi_stays_finite_on_empty_bins_and_is_nan_without_data():
    assert math.isfinite(population_stability_index([100, 0], [0, 100]))
    assert math.isnan(population_stability_index([0, 0], [3, 4]))
    stacked = population_stability_index(np.array([[1, 1], [1, 1]]), np.array([[1, 1], [1, 3]]))
    assert stacked.shape == (2,) and stacked[0] == 0 and stacked[1] > 0


def test_training_quantile_bins_detect_a_shift_and_not_a_resample():
    train = _data(20_000, seed=2)
    edges = quantile_edges(train, n_bins=10)
    counts = histogram_counts(train, edges)
    assert (np.abs(counts - counts.sum(axis=1, keepdims=True) / 10) <= 2).all()
    same = histogram_counts(_data(5000, seed=3), edges)
    shifted = histogram_counts(_data(5000, seed=4, shift=1.0), edges)
    assert (population_stability_index(counts, same) < 0.02).all()
    assert (population_stability_index(counts, shifted) > 0.25).all()


def test_running_histograms_accumulate_merge_and_snapshot():
    train = _data(seed=5)
    edges = quantile_edges(train)
    live = _data(seed=6)
    a, b = RunningHistograms(edges), RunningHistograms(edges)
    a.update(live[:100])
    b.update(live[100:])
    a.merge(b)
    np.testing.assert_array_equal(a.counts, histogram_counts(live, edges))
    restored = RunningHistograms.from_snapshot(pickle.loads(pickle.dumps(a.snapshot())))
    np.testing.assert_array_equal(restored.counts, a.counts)
    with pytest.raises(ValueError, match="different bin edges"):
        a.merge(RunningHistograms(edges + 1.0))


def test_training_distribution_of_real_features_is_strict_json_and_round_trips():
    rows = compute_features(random_walk(2000, seed=7, taker=False)).to_numpy()
    dist = json.loads(json.dumps(training_distribution(rows), allow_nan=False))
    assert dist["feature_names"] == list(FEATURE_NAMES)
    edges = distribution_edges(dist)
    assert np.isnan(edges[FEATURE_NAMES.index("taker_buy_ratio")]).all()
    live = RunningHistograms(edges)
    live.update(compute_features(random_walk(2000, seed=8, taker=False)).to_numpy())
    psi = drift_psi(dist, live.counts)
    assert set(psi) == set(FEATURE_NAMES)
    assert math.isnan(psi["taker_buy_ratio"])
    assert psi["rsi_14"] < 0.1 and psi["hour_sin"] < 0.1
    with pytest.raises(ValueError, match="rows must be"):
        training_distribution(rows[:, :5])


def test_drift_monitor_reads_its_columns_and_merges_across_shards():
    from orchestrator.features import FEATURE_NAMES
    from orchestrator.features.drift import (
        DriftMonitor,
        drift_psi,
        summarize_psi,
        training_distribution,
    )

    rng = np.random.default_rng(0)
    names = ("ret_1", "rsi_14")
    train = rng.normal(size=(5000, 2))
    distribution = training_distribution(train, names)
    full = np.full((4000, len(FEATURE_NAMES)), np.nan)
    full[:, FEATURE_NAMES.index("ret_1")] = rng.normal(size=4000)  # same distribution
    full[:, FEATURE_NAMES.index("rsi_14")] = rng.normal(loc=2.0, size=4000)  # drifted
    a, b = DriftMonitor(distribution), DriftMonitor(distribution)
    a.update(full[:1500])
    b.update(full[1500:])
    psi = drift_psi(distribution, a.counts + b.counts)
    assert psi["ret_1"] < 0.05 < 1.0 < psi["rsi_14"]
    assert a.rows + b.rows == 4000
    assert summarize_psi(psi)["worst"][0][0] == "rsi_14"
    a.moments.merge(b.moments)
    np.testing.assert_allclose(
        a.moments.mean, [full[:, FEATURE_NAMES.index(n)].mean() for n in names]
    )


def test_drift_monitor_resumes_from_a_snapshot_only_in_the_same_bins():
    import pickle

    from orchestrator.features import FEATURE_NAMES
    from orchestrator.features.drift import DriftMonitor, training_distribution

    rng = np.random.default_rng(1)
    names = ("ret_1", "rsi_14")
    distribution = training_distribution(rng.normal(size=(3000, 2)), names)
    rows = rng.normal(size=(900, len(FEATURE_NAMES)))
    whole, before = DriftMonitor(distribution), DriftMonitor(distribution)
    whole.update(rows)
    before.update(rows[:400])
    resumed = DriftMonitor(distribution)  # a restarted shard, restored from the checkpoint
    assert resumed.restore(pickle.loads(pickle.dumps(before.snapshot())))
    resumed.update(rows[400:])
    assert resumed.rows == whole.rows == 900
    np.testing.assert_array_equal(resumed.counts, whole.counts)
    np.testing.assert_allclose(resumed.moments.mean, whole.moments.mean)
    np.testing.assert_allclose(resumed.moments.variance, whole.moments.variance)

    retrained = DriftMonitor(training_distribution(rng.normal(size=(3000, 2)) * 3, names))
    assert not retrained.restore(before.snapshot())  # other training bins: counts refused
    assert retrained.rows == 0 and retrained.counts.sum() == 0
