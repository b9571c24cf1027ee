"""ONNX Runtime inference on full feature matrices (pure: no Ray).

Every caller sends rows in the feature engine's column order (``FEATURE_NAMES``); the
predictor picks its own model's columns, so a model trained on a subset still gets exactly
the features it was trained on, by name. What comes back is described by the manifest's
``outputs``: which columns of which output tensor, under which names (the first is the
model's primary value: ``prob_up``, ``volatility``, ``log_return``, ``p_swing_high``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from orchestrator.features import FEATURE_NAMES
from orchestrator.models.calibration import calibrate_values
from orchestrator.models.registry import ModelManifest

# Manifests written before `outputs` existed describe a binary classifier's P(class 1).
# Typed like ModelManifest.outputs (a plain dict), whose values are str or lists.
LEGACY_OUTPUTS: dict[str, Any] = {"tensor": "probabilities", "columns": [1], "names": ["prob_up"]}


@dataclass(frozen=True)
class OutputSpec:
    tensor: str
    columns: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def of(cls, manifest: ModelManifest) -> OutputSpec:
        raw = getattr(manifest, "outputs", None) or LEGACY_OUTPUTS
        spec = cls(raw["tensor"], tuple(raw["columns"]), tuple(raw["names"]))
        if len(spec.columns) != len(spec.names) or not spec.names:
            raise ValueError(f"{manifest.key}: outputs need one name per column, got {raw}")
        return spec


DEFAULT_Z_LIMIT = 8.0  # docs/models.md#predictions-that-know-their-limits: how it was chosen


class DistributionCheck:
    """Is a feature row inside the model's training distribution? Inside when every feature
    the model reads lies within ``z_limit`` training standard deviations of its training
    mean (``training_distribution.mean/std`` in the manifest, over the training rows);
    NaN features are not counted against a row. A model without a stored distribution
    calls every row inside (``known`` is False)."""

    def __init__(self, manifest: ModelManifest, z_limit: float = DEFAULT_Z_LIMIT):
        stored = getattr(manifest, "training_distribution", None) or {}
        names = stored.get("feature_names") or []
        self.known = bool(names) and "mean" in stored and "std" in stored
        if self.known:
            self._columns = column_selector([FEATURE_NAMES.index(n) for n in names])
            self._mean = np.asarray(stored["mean"], dtype=np.float64)
            std = np.asarray(stored["std"], dtype=np.float64)
            self._std = np.where(std > 0, std, np.inf)  # a constant feature: no limit
        self.z_limit = z_limit

    @property
    def z_limit(self) -> float:
        return self._z_limit

    @z_limit.setter
    def z_limit(self, value: float) -> None:
        self._z_limit = float(value)
        if self.known:  # bounds, not z-scores per row: two comparisons a value
            self._low = self._mean - self._std * self._z_limit
            self._high = self._mean + self._std * self._z_limit

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """(n,) bool for (n, len(FEATURE_NAMES)) rows."""
        if not self.known or len(rows) == 0:
            return np.ones(len(rows), dtype=bool)
        x = rows[:, self._columns]
        outside = (x < self._low) | (x > self._high)  # NaN compares False: not counted
        return np.asarray(~outside.any(axis=1))


def trained_until_ms(manifest: ModelManifest) -> int | None:
    """The end of the model's training range (``training.range[1]``), epoch ms, or None."""
    span = (getattr(manifest, "training", None) or {}).get("range") or []
    if len(span) != 2:
        return None
    from datetime import datetime

    return int(datetime.fromisoformat(span[1]).timestamp() * 1000)


def calibration_of(manifest: ModelManifest) -> dict | None:
    """The manifest's calibration map, if it has one that applies (``method`` not none)."""
    spec = getattr(manifest, "calibration", None)
    return spec if spec and spec.get("method") not in (None, "none") else None


def make_session(model_bytes: bytes) -> ort.InferenceSession:
    """A session tuned for small models on a shared, small machine: one thread, no spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def column_selector(columns: list[int]) -> slice | np.ndarray:
    """A slice when a model reads one unbroken range of the feature columns (a view, no
    gather), else the column indices."""
    if columns == list(range(columns[0], columns[0] + len(columns))):
        return slice(columns[0], columns[0] + len(columns))
    return np.array(columns)


class OnnxPredictor:
    """Wraps one model version; ``predict`` maps full feature rows to its named outputs."""

    def __init__(self, manifest: ModelManifest, model_bytes: bytes):
        self.manifest = manifest
        self.outputs = OutputSpec.of(manifest)
        self.in_distribution = DistributionCheck(manifest)
        self.trained_until_ms = trained_until_ms(manifest)
        self.calibration = calibration_of(manifest)
        self._session = make_session(model_bytes)
        self._input = self._session.get_inputs()[0].name
        self._columns = column_selector([FEATURE_NAMES.index(n) for n in manifest.feature_names])
        tensors = [o.name for o in self._session.get_outputs()]
        if self.outputs.tensor not in tensors:
            raise ValueError(
                f"{manifest.key}: no output tensor {self.outputs.tensor!r} in {tensors}"
            )

    def warm_up(self) -> None:
        """Run once before serving, so the first real request does not pay session set-up."""
        self.predict(np.zeros((1, len(FEATURE_NAMES))))

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """(n, len(outputs.names)) float64: the named outputs for each row, calibrated
        where the manifest says so."""
        return calibrate_values(self.calibration, self.predict_raw(rows))

    def predict_raw(self, rows: np.ndarray) -> np.ndarray:
        """The model's outputs before calibration."""
        if rows.ndim != 2 or rows.shape[1] != len(FEATURE_NAMES):
            raise ValueError(
                f"{self.manifest.key}: rows must be (n, {len(FEATURE_NAMES)}) in "
                f"FEATURE_NAMES order, got {rows.shape}"
            )
        if rows.shape[0] == 0:
            return np.empty((0, len(self.outputs.names)))
        # one pass: a column range is a strided view, so this gathers and narrows at once
        x = np.ascontiguousarray(rows[:, self._columns], dtype=np.float32)
        out = self._session.run([self.outputs.tensor], {self._input: x})[0]
        out = out.reshape(len(x), -1)
        return out[:, list(self.outputs.columns)].astype(np.float64)

    def answer(self, values: np.ndarray, rows: np.ndarray | None = None) -> dict:
        """A model call's answer (what ``ModelOutput.from_response`` reads) for ``values``;
        with the input ``rows``, also whether each lies inside the training distribution."""
        m = self.manifest
        answer = {
            "model_id": m.model_id,
            "model_type": m.model_type,
            "version": m.version,
            "names": list(self.outputs.names),
            "values": values,
            "trained_until_ms": self.trained_until_ms,
        }
        if rows is not None:
            answer["in_distribution"] = self.in_distribution(rows)
        return answer
