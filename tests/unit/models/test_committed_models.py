"""The models committed in models_onnx/ match their manifests, and the manifests keep the
contract the serving side reads (outputs, features, label horizons, stages)."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.features import FEATURE_NAMES, REQUIRED_FEATURES
from orchestrator.models.labels import LABEL_SPECS
from orchestrator.models.registry import Registry, sha256_of
from orchestrator.models.training.datasets import MODEL_TYPES
from orchestrator.models.training.onnx_export import OUTPUTS
from orchestrator.models.training.pipeline import select_version

REGISTRY = PROJECT_ROOT / "models_onnx"
TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
MAX_BYTES = 1_000_000
MANIFESTS = Registry(REGISTRY).manifests()


def test_every_model_type_and_timeframe_is_committed():
    ids = {m.model_id for m in MANIFESTS}
    assert ids == {f"{t}-{tf}" for t in MODEL_TYPES for tf in TIMEFRAMES}
    for tf in TIMEFRAMES:
        direction = {
            m.version: m.metrics["model"]["log_loss"]
            for m in MANIFESTS
            if m.model_id == f"direction-{tf}"
        }
        assert set(direction) == {"v1", "v2"}  # v2: the stacked ensemble


@pytest.mark.parametrize("model_id", sorted({m.model_id for m in MANIFESTS}))
def test_production_is_the_best_version_that_beats_its_baseline(model_id):
    """Promotion on evidence: a model with a version that beats its naive baseline out of
    sample has one production version, the best of those; a model with none has none."""
    versions = [m for m in MANIFESTS if m.model_id == model_id]
    production = [m for m in versions if m.stage == "production"]
    earning = [m for m in versions if m.metrics["beats_baseline"]]
    assert len(production) == (1 if earning else 0)
    if production and len(earning) > 1:  # the competing direction versions
        chosen = select_version([{"version": m.version, "metrics": m.metrics} for m in earning])
        assert production[0].version == chosen["version"]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: m.key)
def test_model_file_matches_its_manifest(manifest):
    data = (REGISTRY / manifest.model_id / manifest.version / manifest.file).read_bytes()
    assert sha256_of(data) == manifest.sha256
    assert len(data) < MAX_BYTES
    assert set(manifest.feature_names) <= set(REQUIRED_FEATURES) <= set(FEATURE_NAMES)
    model = onnx.load_from_string(data)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["feature_names"]) == list(manifest.feature_names)
    assert props["model_type"] == manifest.model_type and props["timeframe"] == manifest.timeframe
    assert props["version"] == manifest.version
    assert len(json.loads(props["feature_means"])) == len(manifest.feature_names)
    assert len(json.loads(props["feature_variances"])) == len(manifest.feature_names)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: m.key)
def test_declared_outputs_exist_in_the_graph(manifest):
    assert manifest.outputs == OUTPUTS[manifest.model_type]
    data = Registry(REGISTRY).load_bytes(manifest)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    assert graph_input.type == "tensor(float)"
    assert graph_input.shape[1] == len(manifest.feature_names)
    rows = np.zeros((3, len(manifest.feature_names)), dtype=np.float32)
    tensor = session.run([manifest.outputs["tensor"]], {graph_input.name: rows})[0]
    values = tensor[:, manifest.outputs["columns"]]  # exactly what the server computes
    assert values.shape == (3, len(manifest.outputs["names"]))


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: m.key)
def test_manifest_records_label_metrics_and_distribution(manifest):
    extra = manifest.model_extra
    assert extra["label"] == LABEL_SPECS[manifest.model_type].to_dict()
    metrics = manifest.metrics
    assert isinstance(metrics["beats_baseline"], bool)
    assert metrics["onnx_max_abs_diff"] >= 0 and metrics["test_rows"] > 0
    assert set(metrics["model"]) >= set(metrics["baseline"]) - {"name"}
    assert extra["training_distribution"]["feature_names"] == list(manifest.feature_names)
    assert extra["training"]["rows"] > metrics["test_rows"]


DIRECTION = [m for m in MANIFESTS if m.model_type == "direction"]
ECE_TARGET = 0.02
# Production direction models whose held-out ECE is still above the target after calibration
# (docs/models.md#the-calibration-study: the held-out base rate moves between folds, which a
# map fitted on earlier folds cannot follow, and their few held-out rows put the measure's
# own noise floor at 0.008-0.014). Listed so that a model joining them, or leaving them,
# fails this test.
ABOVE_TARGET = {"direction-5m@v1", "direction-15m@v1", "direction-1d@v1"}


@pytest.mark.parametrize("manifest", DIRECTION, ids=lambda m: m.key)
def test_direction_models_are_calibrated_out_of_sample_and_never_made_worse(manifest):
    """Measured by `tickcast train` on the walk-forward folds after the first, each
    calibrated by a map fitted on the folds before it: the map is kept only where it lowers
    the expected calibration error, and the metrics are those of the model as served."""
    spec = manifest.calibration
    assert spec["method"] in ("isotonic", "none")
    served = spec["ece_after"] if spec["method"] == "isotonic" else spec["ece_before"]
    assert served <= spec["ece_before"]
    if spec["method"] == "isotonic":  # kept only where it helped (and is not a constant)
        assert spec["ece_after"] < spec["ece_before"] and len(spec["x"]) >= 2
    assert manifest.metrics["model"]["ece"] == pytest.approx(served)
    assert manifest.metrics["model_uncalibrated"]["ece"] == pytest.approx(spec["ece_before"])


def test_production_direction_models_meet_the_calibration_target():
    production = {m.key: m for m in DIRECTION if m.stage == "production"}
    above = {key for key, m in production.items() if m.metrics["model"]["ece"] > ECE_TARGET}
    assert above == ABOVE_TARGET
