"""ModelServer: a Serve deployment hosting one model (type, timeframe) or a group of them,
ONNX Runtime inside.

Requests are whole feature matrices (every symbol that closed on a tick), and
``@serve.batch`` merges concurrent requests from several shards into one ONNX call per
model. A version switch arrives as a new ``user_config``: the new session is loaded first
and then swapped in with one reference assignment, so in-flight batches finish on the old
one; in a group, each model switches on its own (``{"versions": {model_id: version}}``).

One model per deployment (``serving.model_groups: none``) scales each model on its own; a
group (``timeframe`` or ``all``) shares one process, its imports and its ONNX Runtime among
its models (a replica is ~140 MiB before its first model) and starts once, and its models
scale together. ``ModelInGroup`` gives a group's model the same handle interface as a
deployment of its own (``.predict.remote(rows)``), so the ingress never knows; a feature
shard calls all of a timeframe's models in a group at once (``ModelsInGroup``,
``predict_models``): one call per tick and group, the rows sent once.

A model its config does not pin (``version`` None in the user_config) follows the registry:
every ``registry_poll_s`` a thread asks the registry for its production version and, when
that changed (a promotion, a rollback, an MLflow alias moved), loads it and swaps it in the
same way. Each replica polls on its own, so replicas agree again within one poll.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
from ray import serve

from orchestrator.models.compiled import Predictor, engine_of, predictor_factory
from orchestrator.models.predictor import DEFAULT_Z_LIMIT
from orchestrator.models.registry import NoChallenger, RegistryError, open_registry
from serve_app.api.backend import BackendError
from serve_app.model_group import role_of, split_key

MAX_PINNED_VERSIONS = 4

log = logging.getLogger("ray.serve")


def split_rows(values: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(values, np.cumsum(sizes)[:-1])


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
class ModelServer:
    def __init__(self, model_ids: tuple[str, ...], models_dir: str, engine: str = "onnx"):
        """``model_ids``: the serving key of each model it hosts (``type-timeframe``, with
        ``-shadow`` or ``-canary`` for a challenger; the first answers the calls that name
        none); ``engine``: ``serving.engine``."""
        self._registry = open_registry(models_dir)
        self._make = predictor_factory(engine)
        self._ids = tuple(model_ids)
        self._z_limit = DEFAULT_Z_LIMIT  # signals.ood_z_limit, from the user_config
        self._predictors = {key: self._first_load(key) for key in self._ids}
        self._unmarked: set[str] = set()  # challengers whose registry marks none (logged)
        self._pinned: dict[tuple[str, str], Predictor] = {}  # versions asked for by name
        self._config_versions: dict[str, str | None] = dict.fromkeys(self._ids)
        self._swap = threading.Lock()  # reconfigure and the registry poll, one at a time
        self._poll_s = 0.0
        self._stop = threading.Event()  # never set: the daemon thread ends with the replica
        self._poller: threading.Thread | None = None

    def _load(self, key: str, version: str | None) -> Predictor:
        model_type, timeframe = split_key(key)
        manifest = self._registry.resolve(model_type, timeframe, version, role_of(key))
        predictor = self._make(manifest, self._registry.load_bytes(manifest))
        predictor.in_distribution.z_limit = self._z_limit
        predictor.warm_up()
        log.info("loaded %s (stage %s)", manifest.key, manifest.stage)
        return predictor

    def _first_load(self, key: str) -> Predictor:
        """A model before its user_config (which names a pinned version) arrives: what an
        unpinned entry serves; a challenger pinned in the config while the registry marks
        none starts on the production version and switches at once."""
        try:
            return self._load(key, None)
        except RegistryError:  # no mark, or a marked version that cannot load
            if role_of(key) == "production":
                raise
            model_type, timeframe = split_key(key)
            production = self._registry.resolve(model_type, timeframe).version
            return self._load(key, production)

    def reconfigure(self, user_config: dict) -> None:
        versions = dict(user_config.get("versions") or {})
        if "version" in user_config:  # a deployment of one model
            versions[self._ids[0]] = user_config["version"]
        with self._swap:
            for key, version in versions.items():
                if key not in self._predictors:
                    continue
                self._config_versions[key] = version
                self._switch(key, version)
        self._z_limit = float(user_config.get("ood_z_limit", DEFAULT_Z_LIMIT))
        for predictor in [*self._predictors.values(), *self._pinned.values()]:
            predictor.in_distribution.z_limit = self._z_limit
        self._poll_s = float(user_config.get("registry_poll_s", 0.0))
        if self._poll_s > 0 and self._poller is None:
            self._poller = threading.Thread(
                target=self._follow_registry, name="registry-poll", daemon=True
            )
            self._poller.start()
        size = int(user_config.get("max_batch_size", 64))
        wait = float(user_config.get("batch_wait_timeout_s", 0.0))
        for method in (self.predict, self.predict_model, self.predict_models):
            method.set_max_batch_size(size)
            method.set_batch_wait_timeout_s(wait)

    def _switch(self, key: str, version: str | None) -> None:
        """Serve ``version`` of ``key`` (None: the registry's production version): load it
        fully, then swap one reference; in-flight batches finish on the old session and the
        other models are untouched."""
        current = self._predictors[key]
        if version is None:  # the registry's production version, or challenger for one
            model_type, timeframe = split_key(key)
            try:
                version = self._registry.resolve(model_type, timeframe, None, role_of(key)).version
            except NoChallenger:  # the mark cleared (its version promoted): keep running
                if key not in self._unmarked:
                    log.info("%s: no challenger marked; keeping %s", key, current.manifest.key)
                self._unmarked.add(key)
                return
            self._unmarked.discard(key)
        if version != current.manifest.version:
            self._predictors[key] = self._load(key, version)
            log.info("%s: now serving %s (was %s)", key, version, current.manifest.version)

    def _follow_registry(self) -> None:
        """The poll thread: unpinned models follow the registry's production version. A
        registry that cannot be read keeps the current versions (one warning per outage)."""
        failing = False
        while not self._stop.wait(self._poll_s):
            try:
                with self._swap:
                    for key, pinned in self._config_versions.items():
                        if pinned is None:
                            self._switch(key, None)
                if failing:
                    log.info("registry %s is readable again", self._registry.location)
                failing = False
            except Exception as exc:  # a registry outage must not stop serving
                if not failing:
                    log.warning(
                        "registry %s unreadable (%s); serving the loaded versions",
                        self._registry.location,
                        exc,
                    )
                failing = True

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def predict(self, matrices: list[np.ndarray]) -> list[dict]:
        """The hosted model (the first, in a group)."""
        return self._predict(matrices, [self._ids[0]] * len(matrices))

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def predict_model(self, matrices: list[np.ndarray], keys: list[str]) -> list[dict]:
        """Calls for any of the hosted models, batched together: one ONNX call per model."""
        return self._predict(matrices, keys)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def predict_models(
        self, matrices: list[np.ndarray], key_lists: list[tuple[str, ...]]
    ) -> list[list[dict]]:
        """Calls that each carry one matrix for several hosted models (a shard's tick: every
        model of its timeframe), batched: still one ONNX call per model, and the rows
        crossed the wire once per call instead of once per model."""
        flat = self._predict(
            [m for m, keys in zip(matrices, key_lists, strict=True) for _ in keys],
            [k for keys in key_lists for k in keys],
        )
        ends = np.cumsum([len(keys) for keys in key_lists]).tolist()
        return [flat[end - len(keys) : end] for end, keys in zip(ends, key_lists, strict=True)]

    def _predict(self, matrices: list[np.ndarray], keys: list[str]) -> list[dict]:
        answers: list[dict] = [{}] * len(matrices)
        for key in dict.fromkeys(keys):
            predictor = self._predictor(key)  # one version for the whole batch, even mid-switch
            calls = [i for i, k in enumerate(keys) if k == key]
            inputs = [matrices[i] for i in calls]
            values = predictor.predict(inputs[0] if len(inputs) == 1 else np.concatenate(inputs))
            parts = split_rows(values, [len(matrices[i]) for i in calls])
            role = role_of(key)  # a challenger's answers say so: its events are not signals
            for i, part in zip(calls, parts, strict=True):
                answers[i] = {**predictor.answer(part, matrices[i]), "role": role}
        return answers

    def _predictor(self, key: str) -> Predictor:
        try:
            return self._predictors[key]
        except KeyError:
            raise BackendError(404, f"model {key} is not in this deployment") from None

    async def predict_version(self, rows: np.ndarray, version: str, key: str | None = None) -> dict:
        """A request that names its version (not batched: it is the rare path)."""
        key = key or self._ids[0]
        predictor = self._predictor(key)
        if version != predictor.manifest.version:
            predictor = self._pinned.get((key, version)) or self._pin(key, version)
        return predictor.answer(predictor.predict(rows), rows)

    def _pin(self, key: str, version: str) -> Predictor:
        try:
            predictor = self._load(key, version)
        except RegistryError as exc:
            raise BackendError(404, str(exc)) from None
        if len(self._pinned) >= MAX_PINNED_VERSIONS:
            self._pinned.pop(next(iter(self._pinned)))
        self._pinned[(key, version)] = predictor
        return predictor

    def pid(self) -> int:
        return os.getpid()

    def describe(self, key: str | None = None) -> dict:
        key = key or self._ids[0]
        predictor = self._predictor(key)
        m = predictor.manifest
        return {
            "model_id": m.model_id,
            "role": role_of(key),
            "version": m.version,
            "stage": m.stage,
            "features": list(m.feature_names),
            "outputs": list(predictor.outputs.names),
            "engine": engine_of(predictor),
            "registry": self._registry.location,  # where the replica read it from
        }
