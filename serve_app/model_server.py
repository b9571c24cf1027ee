"""ModelServer: one Serve deployment per (model type, timeframe), ONNX Runtime inside.

Requests are whole feature matrices (every symbol that closed on a tick), and
``@serve.batch`` merges concurrent requests from several shards into one ONNX call.
A version switch arrives as a new ``user_config``: the new session is loaded first and then
swapped in with one reference assignment, so in-flight batches finish on the old one.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from ray import serve

from orchestrator import resolve_path
from orchestrator.models.predictor import OnnxPredictor
from orchestrator.models.registry import Registry, RegistryError
from serve_app.api.backend import BackendError

MAX_PINNED_VERSIONS = 4

log = logging.getLogger("ray.serve")


def split_rows(values: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(values, np.cumsum(sizes)[:-1])


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
class ModelServer:
    def __init__(self, model_type: str, timeframe: str, models_dir: str):
        self.model_type, self.timeframe = model_type, timeframe
        self._registry = Registry(resolve_path(models_dir))
        self._predictor = self._load(None)
        self._pinned: dict[str, OnnxPredictor] = {}  # other versions asked for by name

    def _load(self, version: str | None) -> OnnxPredictor:
        manifest = self._registry.resolve(self.model_type, self.timeframe, version)
        predictor = OnnxPredictor(manifest, self._registry.load_bytes(manifest))
        predictor.warm_up()
        log.info("loaded %s (stage %s)", manifest.key, manifest.stage)
        return predictor

    def reconfigure(self, user_config: dict) -> None:
        version = user_config.get("version")
        if version is not None and version != self._predictor.manifest.version:
            self._predictor = self._load(version)  # load fully, then swap one reference
        self.predict.set_max_batch_size(int(user_config.get("max_batch_size", 64)))
        self.predict.set_batch_wait_timeout_s(float(user_config.get("batch_wait_timeout_s", 0.0)))

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def predict(self, matrices: list[np.ndarray]) -> list[dict]:
        predictor = self._predictor  # one version for the whole batch, even mid-switch
        values = predictor.predict(np.concatenate(matrices))
        m = predictor.manifest
        names = list(predictor.outputs.names)
        return [
            {
                "model_id": m.model_id,
                "model_type": m.model_type,
                "version": m.version,
                "names": names,
                "values": part,
            }
            for part in split_rows(values, [len(x) for x in matrices])
        ]

    async def predict_version(self, rows: np.ndarray, version: str) -> dict:
        """A request that names its version (not batched: it is the rare path)."""
        predictor = self._predictor
        if version != predictor.manifest.version:
            predictor = self._pinned.get(version) or self._pin(version)
        m = predictor.manifest
        return {
            "model_id": m.model_id,
            "model_type": m.model_type,
            "version": m.version,
            "names": list(predictor.outputs.names),
            "values": predictor.predict(rows),
        }

    def _pin(self, version: str) -> OnnxPredictor:
        try:
            predictor = self._load(version)
        except RegistryError as exc:
            raise BackendError(404, str(exc)) from None
        if len(self._pinned) >= MAX_PINNED_VERSIONS:
            self._pinned.pop(next(iter(self._pinned)))
        self._pinned[version] = predictor
        return predictor

    def pid(self) -> int:
        return os.getpid()

    def describe(self) -> dict:
        m = self._predictor.manifest
        return {
            "model_id": m.model_id,
            "version": m.version,
            "stage": m.stage,
            "features": list(m.feature_names),
            "outputs": list(self._predictor.outputs.names),
        }
