"""One model from dataset to registry entry: walk-forward evaluation beside its baseline,
the final fit, ONNX export, parity, and the manifest (pure: returns bytes and a dict).

Model ids are ``<model_type>-<timeframe>``; every model type has a LightGBM ``v1`` and
``direction`` also a stacked ensemble ``v2``. Stages: whichever ``direction`` version has
the lower out-of-sample log loss is production, the other staging; every other model is
production, flagged ``metrics.beats_baseline: false`` when it does not beat its baseline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from orchestrator.features.drift import training_distribution
from orchestrator.models.calibration import ece, out_of_sample_calibration
from orchestrator.models.labels import LABEL_SPECS
from orchestrator.models.training import metrics as m
from orchestrator.models.training.datasets import MODEL_TYPES, ModelData
from orchestrator.models.training.models import N_CLASSES, TASKS, make_learner
from orchestrator.models.training.onnx_export import OUTPUTS, finalize, parity, to_onnx
from orchestrator.models.training.walk_forward import (
    FIRST_TEST_QUANTILE,
    N_FOLDS,
    Fold,
    walk_forward_folds,
)

PARITY_ROWS = 5_000  # the most recent rows, where thresholds sit among real values
# ONNX must match native to 1e-5 on probabilities, and to 1e-5 of the target's spread on
# regressors (a log return of 1e-3 cannot be held to an absolute 1e-5).
PARITY_TOLERANCE = 1e-5
VALIDATION = (
    f"walk-forward: {N_FOLDS} expanding folds over the last {1 - FIRST_TEST_QUANTILE:.0%} of "
    "the time range, never shuffled; training rows whose label reads candles inside the "
    "test period are purged"
)


@dataclass(frozen=True)
class ModelPlan:
    model_type: str
    timeframe: str
    version: str
    learner: str  # "lightgbm" or "stacked"

    @property
    def model_id(self) -> str:
        return f"{self.model_type}-{self.timeframe}"


def plans_for(timeframe: str) -> list[ModelPlan]:
    """Every model trained for one timeframe."""
    plans = [ModelPlan(t, timeframe, "v1", "lightgbm") for t in MODEL_TYPES]
    return [*plans, ModelPlan("direction", timeframe, "v2", "stacked")]


@dataclass(frozen=True)
class TrainedModel:
    plan: ModelPlan
    model_bytes: bytes
    manifest: dict
    cpu_seconds: float = 0.0  # reported by the trainer, never written to the manifest


def train_model(plan: ModelPlan, data: ModelData, source: dict) -> TrainedModel:
    """Evaluate walk-forward, fit on every row, export, check parity, describe.

    ``source``: what the rows came from (data set names, symbols), copied to the manifest.
    """
    report = evaluate(plan, data)
    calibration = report.pop("calibration", None)
    learner = make_learner(plan.model_type, plan.learner)
    learner.fit(data.features, data.target, data.open_time, data.purge_ms)
    model_bytes = finalize(
        to_onnx(learner, data.features.shape[1]),
        f"{plan.model_id}-{plan.version}",
        onnx_metadata(plan, data),
    )
    report["onnx_max_abs_diff"] = checked_parity(plan, data, learner, model_bytes)
    manifest = build_manifest(plan, data, source, report, learner.describe(), model_bytes)
    if calibration is not None:
        manifest["calibration"] = calibration
    return TrainedModel(plan, model_bytes, manifest)


def evaluate(plan: ModelPlan, data: ModelData, n_folds: int = N_FOLDS) -> dict:
    """Out-of-sample metrics of the model and its baseline over the walk-forward folds."""
    folds = walk_forward_folds(data.open_time, data.purge_ms, n_folds)
    model_out = fold_outputs(plan, data, folds)
    base_out = [baseline_output(data, fold.train, fold.test) for fold in folds]
    truth = [data.target[fold.test] for fold in folds]
    if TASKS[plan.model_type] == "binary":
        return _evaluate_calibrated(plan, data, folds, truth, model_out, base_out)
    y = np.concatenate(truth)
    model = score(plan.model_type, y, np.concatenate(model_out))
    baseline = score(plan.model_type, y, np.concatenate(base_out))
    return {
        "validation": VALIDATION,
        "folds": [f.describe(data.open_time) for f in folds],
        "test_rows": int(len(y)),
        "model": model,
        "baseline": {"name": m.BASELINE_NAMES[plan.model_type], **baseline},
        "criterion": m.CRITERIA[_kind(plan.model_type)],
        "beats_baseline": m.beats_baseline(model, baseline),
    }


def fold_outputs(plan: ModelPlan, data: ModelData, folds: list[Fold]) -> list[np.ndarray]:
    """The model's out-of-sample outputs on each fold's test rows, trained on its train rows."""
    outputs = []
    for fold in folds:
        learner = make_learner(plan.model_type, plan.learner).fit(
            data.features[fold.train],
            data.target[fold.train],
            data.open_time[fold.train],
            data.purge_ms,
        )
        outputs.append(learner.predict(data.features[fold.test]))
    return outputs


def _evaluate_calibrated(plan, data, folds, truth, model_out, base_out) -> dict:
    """A binary classifier (direction) is scored as it will serve, calibrated: on the folds
    after the first, each calibrated by a map fitted on the folds before it (the first fold
    has none before it and is not scored), beside its uncalibrated self and the baseline on
    the same rows (docs/models.md#calibration)."""
    calibration, served = out_of_sample_calibration([o[:, 1] for o in model_out], truth)
    y = np.concatenate(truth[1:])
    raw = np.concatenate([o[:, 1] for o in model_out[1:]])
    model = m.binary_metrics(y, served)
    baseline = score(plan.model_type, y, np.concatenate(base_out[1:]))
    return {
        "validation": f"{VALIDATION}; scored on folds 2-{len(folds)}, calibrated out of sample",
        "folds": [f.describe(data.open_time) for f in folds],
        "test_rows": int(len(y)),
        "model": {**model, "ece": ece(y, served)},
        "model_uncalibrated": {**m.binary_metrics(y, raw), "ece": ece(y, raw)},
        "baseline": {"name": m.BASELINE_NAMES[plan.model_type], **baseline},
        "criterion": m.CRITERIA[_kind(plan.model_type)],
        "beats_baseline": m.beats_baseline(model, baseline),
        "calibration": calibration,
    }


def _kind(model_type: str) -> str:
    return "regressor" if TASKS[model_type] == "regression" else "classifier"


def baseline_output(data: ModelData, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The naive forecast for the test rows, in the learner's output layout."""
    if data.baseline is not None:
        return data.baseline[test].reshape(-1, 1)
    shares = m.class_frequencies(data.target[train], N_CLASSES[data.model_type])
    return np.tile(shares, (len(test), 1))


def score(model_type: str, y: np.ndarray, output: np.ndarray) -> dict:
    task = TASKS[model_type]
    if task == "binary":
        return m.binary_metrics(y, output[:, 1])
    if task == "multiclass":
        return m.multiclass_metrics(y, output)
    return m.regression_metrics(y, output[:, 0])


def parity_tolerance(model_type: str, target: np.ndarray) -> float:
    if TASKS[model_type] == "regression":
        return PARITY_TOLERANCE * float(np.std(target))
    return PARITY_TOLERANCE


def checked_parity(plan: ModelPlan, data: ModelData, learner, model_bytes: bytes) -> float:
    """Max |ONNX - native| on the latest rows; an export that disagrees is an error."""
    diff = parity(model_bytes, learner, data.features[-PARITY_ROWS:], OUTPUTS[plan.model_type])
    tolerance = parity_tolerance(plan.model_type, data.target)
    if not diff <= tolerance:
        raise RuntimeError(
            f"{plan.model_id}@{plan.version}: ONNX differs from native by "
            f"{diff:.3g} > {tolerance:.3g}"
        )
    return diff


def training_range(data: ModelData) -> list[str]:
    return [iso_minutes(data.open_time.min()), iso_minutes(data.open_time.max())]


def iso_minutes(ms: int) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).isoformat(timespec="minutes")


def onnx_metadata(plan: ModelPlan, data: ModelData) -> dict:
    """What a reader of the .onnx file alone needs; JSON for the non-strings."""
    x = data.features.astype(np.float64)
    return {
        "model_id": plan.model_id,
        "model_type": plan.model_type,
        "timeframe": plan.timeframe,
        "version": plan.version,
        "training_range": training_range(data),
        "feature_names": list(data.feature_names),
        "feature_means": x.mean(axis=0).tolist(),
        "feature_variances": x.var(axis=0).tolist(),
        "label": LABEL_SPECS[plan.model_type].to_dict(),
        "outputs": OUTPUTS[plan.model_type],
    }


def build_manifest(
    plan: ModelPlan, data: ModelData, source: dict, report: dict, learner: dict, model_bytes: bytes
) -> dict:
    return {
        "model_id": plan.model_id,
        "model_type": plan.model_type,
        "timeframe": plan.timeframe,
        "version": plan.version,
        "stage": "staging",
        "file": "model.onnx",
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "size_bytes": len(model_bytes),
        "feature_names": list(data.feature_names),
        "outputs": OUTPUTS[plan.model_type],
        "label": LABEL_SPECS[plan.model_type].to_dict(),
        "learner": learner,
        "metrics": report,
        "training": {**source, "range": training_range(data), "rows": int(len(data.target))},
        "training_distribution": training_distribution(data.features, data.feature_names),
    }


# A stacked ensemble costs several times the CPU per row of the LightGBM model (and cannot run
# as compiled trees): it serves only when its out-of-sample log loss is lower by more than
# this; within it, the simpler, older version serves.
SELECTION_MARGIN = 0.001


def assign_stages(manifests: list[dict]) -> None:
    """Production for the best version of each model id among those that beat their naive
    baseline out of sample (lowest out-of-sample log loss where versions compete, the
    simpler one within ``SELECTION_MARGIN``), staging for the others: a model none of whose
    versions beats its baseline has no production version
    (docs/models.md#promotion-on-evidence); in place."""
    by_id: dict[str, list[dict]] = {}
    for manifest in manifests:
        by_id.setdefault(manifest["model_id"], []).append(manifest)
    for versions in by_id.values():
        earning = [m for m in versions if m["metrics"].get("beats_baseline")]
        best = select_version(earning) if earning else None
        for manifest in versions:
            manifest["stage"] = "production" if manifest is best else "staging"


def select_version(manifests: list[dict]) -> dict:
    """The oldest version whose loss is within ``SELECTION_MARGIN`` of the lowest."""
    lowest = min(_selection_loss(m)[0] for m in manifests)
    eligible = [m for m in manifests if _selection_loss(m)[0] <= lowest + SELECTION_MARGIN]
    return min(eligible, key=lambda m: _version_number(m["version"]))


def _version_number(version: str) -> int:
    digits = version.lstrip("v")
    return int(digits) if digits.isdigit() else 0


def _selection_loss(manifest: dict) -> tuple[float, str]:
    model = manifest["metrics"]["model"]
    loss = model.get("log_loss", model.get("rmse"))
    return (loss, manifest["version"])  # ties go to the older, simpler version
