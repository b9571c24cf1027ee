"""Calibration of direction probabilities: the isotonic map, decided out of sample, applied
the same way by every predictor."""

import numpy as np
import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.features import FEATURE_NAMES
from orchestrator.models.calibration import (
    apply_map,
    calibrate_values,
    ece,
    fit_isotonic,
    max_slope,
    out_of_sample_calibration,
)
from orchestrator.models.predictor import OnnxPredictor
from orchestrator.models.registry import Registry

REGISTRY = Registry(PROJECT_ROOT / "models_onnx")


def _overconfident(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw P(up) twice as far from 0.5 as the truth: a classic tree-ensemble miscalibration."""
    truth = rng.uniform(0.4, 0.6, n)
    y = (rng.uniform(size=n) < truth).astype(np.float64)
    return 0.5 + 2.0 * (truth - 0.5), y


def test_an_overconfident_model_is_calibrated_out_of_sample():
    rng = np.random.default_rng(3)
    folds = [_overconfident(rng, 40_000) for _ in range(3)]
    spec, served = out_of_sample_calibration([p for p, _ in folds], [y for _, y in folds])
    assert spec["method"] == "isotonic"
    assert spec["ece_before"] > 0.04 and spec["ece_after"] < 0.01
    y = np.concatenate([y for _, y in folds[1:]])
    assert len(served) == len(y) and ece(y, served) == pytest.approx(spec["ece_after"])
    assert np.all(np.diff(spec["y"]) >= 0) and np.all(np.diff(spec["x"]) > 0)  # monotone
    p = np.array([0.36, 0.5, 0.64])  # inside the range, away from its sparse ends
    assert apply_map(spec, p) == pytest.approx(0.5 + (p - 0.5) / 2, abs=0.03)


def test_calibration_never_makes_the_held_out_error_worse():
    """Already calibrated probabilities: whatever the evidence decides, what serves on the
    held-out folds is no worse calibrated than the raw probabilities."""
    rng = np.random.default_rng(4)
    folds = []
    for _ in range(3):
        p = rng.uniform(0.4, 0.6, 20_000)
        folds.append((p, (rng.uniform(size=len(p)) < p).astype(np.float64)))
    spec, served = out_of_sample_calibration([p for p, _ in folds], [y for _, y in folds])
    y = np.concatenate([y for _, y in folds[1:]])
    raw = np.concatenate([p for p, _ in folds[1:]])
    assert ece(y, served) <= ece(y, raw)
    assert spec["ece_before"] == pytest.approx(ece(y, raw))
    if spec["method"] == "none":
        assert np.array_equal(served, raw)


def test_knots_keep_the_map_gentle():
    """One knot per block of at least 1% of the rows: no near-vertical stretch that would
    magnify the rounding two engines are allowed."""
    rng = np.random.default_rng(6)
    p, y = _overconfident(rng, 100_000)
    spec = fit_isotonic(p, y)
    assert 2 <= len(spec["x"]) <= 100
    assert max_slope(spec) < 10


def test_only_the_primary_output_is_calibrated_and_a_missing_map_changes_nothing():
    spec = fit_isotonic(np.array([0.2, 0.4, 0.6, 0.8]), np.array([0.0, 0.0, 1.0, 1.0]))
    values = np.array([[0.3, 7.0], [0.7, 8.0]])
    out = calibrate_values(spec, values)
    assert out[:, 1].tolist() == [7.0, 8.0] and values[0, 0] == 0.3  # a copy
    assert out[:, 0].tolist() == apply_map(spec, values[:, 0]).tolist()
    assert calibrate_values(None, values) is values
    assert calibrate_values({"method": "none"}, values) is values


def test_served_direction_models_apply_their_stored_map():
    rows = np.random.default_rng(5).normal(size=(300, len(FEATURE_NAMES)))
    calibrated = [
        m
        for m in REGISTRY.manifests("direction")
        if (getattr(m, "calibration", None) or {}).get("method") == "isotonic"
    ]
    assert calibrated  # training kept a map for some direction model
    for manifest in calibrated:
        bare = manifest.model_copy(update={"calibration": None})
        data = REGISTRY.load_bytes(manifest)
        raw = OnnxPredictor(bare, data).predict(rows)
        served = OnnxPredictor(manifest, data).predict(rows)
        expected = np.interp(raw[:, 0], manifest.calibration["x"], manifest.calibration["y"])
        np.testing.assert_allclose(served[:, 0], expected, rtol=0, atol=1e-12)
