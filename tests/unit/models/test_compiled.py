"""Tree ensembles compiled from their ONNX graph answer as ONNX Runtime does, to 1e-6,
NaN included; what cannot be compiled, or answers differently, stays on ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.features import FEATURE_NAMES
from orchestrator.models.calibration import calibrate_values
from orchestrator.models.compiled import (
    TOLERANCE,
    CompiledTrees,
    NotCompilable,
    fastest_predictor,
    parse_ensemble,
)
from orchestrator.models.predictor import OnnxPredictor
from orchestrator.models.registry import Registry

REGISTRY = Registry(PROJECT_ROOT / "models_onnx")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKCAST_CACHE_DIR", str(tmp_path / "cache"))


def _model(model_id: str, version: str | None = None):
    model_type, timeframe = model_id.split("-")
    manifest = REGISTRY.resolve(model_type, timeframe, version)
    return manifest, REGISTRY.load_bytes(manifest)


def _rows(n: int = 20_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, len(FEATURE_NAMES))) * rng.choice([0.01, 1.0, 50.0], size=n)[:, None]
    rows[rng.random(rows.shape) < 0.05] = np.nan  # missing values take each split's NaN side
    return rows


@pytest.mark.parametrize(
    ("model_id", "kind"),
    [
        ("direction-1m", "binary"),  # the production direction model: 120 trees
        ("volatility-1m", "regression"),
        ("return-1h", "regression"),
        ("swing-5m", "multiclass"),
    ],
)
def test_compiled_trees_answer_as_onnx_runtime(model_id, kind):
    manifest, model_bytes = _model(model_id)
    compiled = CompiledTrees(manifest, model_bytes)
    assert compiled.ensemble.kind == kind
    rows = _rows()
    got = compiled.predict_raw(rows)
    onnx = OnnxPredictor(manifest, model_bytes)
    expected = onnx.predict_raw(rows)
    assert compiled.active and compiled.checked  # its own check passed
    assert got.shape == expected.shape
    assert np.nanmax(np.abs(got - expected)) <= TOLERANCE
    # both then apply the manifest's calibration, the same map
    served = compiled.predict(rows)
    assert np.array_equal(served, calibrate_values(onnx.calibration, got))
    # Rows exactly on a split's threshold: float32 rounding sends them where ONNX does.
    splits = [
        (f, t)
        for tree in compiled.ensemble.trees
        for f, t in zip(tree.feature, tree.threshold, strict=True)
    ]
    on_split = _rows(len(splits[:2000]), seed=1)
    for row, (feature, threshold) in zip(on_split, splits, strict=False):
        row[FEATURE_NAMES.index(manifest.feature_names[feature])] = threshold
    onnx_answer = OnnxPredictor(manifest, model_bytes).predict_raw(on_split)
    assert np.nanmax(np.abs(compiled.predict_raw(on_split) - onnx_answer)) <= TOLERANCE


def test_a_stacked_model_stays_on_onnx_runtime():
    manifest, model_bytes = _model("direction-5m", "v2")  # LightGBM + forest + logistic meta
    assert manifest.learner["learner"] == "stacked ensemble"
    with pytest.raises(NotCompilable, match="not a tree ensemble"):
        parse_ensemble(model_bytes, "probabilities", len(manifest.feature_names))
    assert isinstance(fastest_predictor(manifest, model_bytes), OnnxPredictor)


def test_a_compiled_model_that_disagrees_falls_back_for_good():
    manifest, model_bytes = _model("direction-1m")
    compiled = CompiledTrees(manifest, model_bytes)

    class Wrong:
        def predict(self, x, n_jobs=1):
            return np.full(len(x), 0.5)

    compiled._model = Wrong()
    assert compiled.predict(_rows(0)).shape == (0, 1) and not compiled.checked  # nothing to check
    rows = _rows(500)
    expected = OnnxPredictor(manifest, model_bytes).predict(rows)
    np.testing.assert_array_equal(compiled.predict(rows), expected)
    assert not compiled.active
    np.testing.assert_array_equal(compiled.predict(rows[:7]), expected[:7])


def test_compiled_objects_are_cached_per_model(tmp_path):
    manifest, model_bytes = _model("return-1m")
    first = CompiledTrees(manifest, model_bytes)
    cached = list((tmp_path / "cache" / "compiled-trees").glob("*.o"))
    assert len(cached) == 1 and cached[0].name.startswith("return-1m-")
    stamp = cached[0].stat().st_mtime_ns
    second = CompiledTrees(manifest, model_bytes)  # loads the object, compiles nothing
    assert cached[0].stat().st_mtime_ns == stamp
    rows = _rows(1000)
    np.testing.assert_array_equal(first.predict(rows), second.predict(rows))
