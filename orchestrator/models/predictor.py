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
        """(n, len(outputs.names)) float64: the named outputs for each row."""
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

    def answer(self, values: np.ndarray) -> dict:
        """A model call's answer (what ``ModelOutput.from_response`` reads) for ``values``."""
        m = self.manifest
        return {
            "model_id": m.model_id,
            "model_type": m.model_type,
            "version": m.version,
            "names": list(self.outputs.names),
            "values": values,
        }
