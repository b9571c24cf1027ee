"""ONNX Runtime inference on full feature matrices (pure: no Ray).

Every caller sends rows in the feature engine's column order (``FEATURE_NAMES``); the
predictor picks its own model's columns, so a model trained on a subset still gets exactly
the features it was trained on, by name.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from orchestrator.features import FEATURE_NAMES
from serve_app.registry import ModelManifest


def make_session(model_bytes: bytes) -> ort.InferenceSession:
    """A session tuned for small models on a shared, small machine: one thread, no spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


class OnnxPredictor:
    """Wraps one model version; ``predict`` maps full feature rows to one value per row."""

    def __init__(self, manifest: ModelManifest, model_bytes: bytes):
        self.manifest = manifest
        self._session = make_session(model_bytes)
        self._input = self._session.get_inputs()[0].name
        self._columns = np.array([FEATURE_NAMES.index(n) for n in manifest.feature_names])
        self._output = self._pick_output()

    def _pick_output(self) -> str:
        outputs = self._session.get_outputs()
        for out in outputs:
            if "prob" in out.name:
                return out.name
        return outputs[-1].name

    def warm_up(self) -> None:
        """Run once before serving, so the first real request does not pay session set-up."""
        self.predict(np.zeros((1, len(FEATURE_NAMES))))

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """P(positive class) for classifiers, the value for regressors; shape (n,)."""
        if rows.shape[0] == 0:
            return np.empty(0)
        x = np.ascontiguousarray(rows[:, self._columns], dtype=np.float32)
        out = self._session.run([self._output], {self._input: x})[0]
        return out[:, 1].astype(np.float64) if out.ndim == 2 else out.reshape(-1).astype(np.float64)
