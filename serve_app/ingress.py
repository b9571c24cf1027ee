"""Ingress: the public API (``serve_app/api/app.py``) mounted in a Serve deployment, with Ray
handles behind it. Handles are taken once, in ``__init__``."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from fastapi import FastAPI
from ray import serve
from ray.exceptions import RayActorError, RayError
from ray.serve.handle import DeploymentHandle

from orchestrator.config import TickcastConfig
from orchestrator.health.log_limit import limit_logging
from orchestrator.models.registry import open_registry
from orchestrator.sinks.history import HistoryPage, HistoryQuery, query_log
from orchestrator.storage import locate
from serve_app.api.app import create_api
from serve_app.api.backend import BackendError
from serve_app.api.coalesce import Coalescer

log = logging.getLogger("ray.serve")


class ServeBackend:
    def __init__(self, config: TickcastConfig, pipeline: DeploymentHandle, models: dict):
        limit_logging()  # tickcast's own lines here (a damaged log file) formatted and capped
        self._pipeline, self._models = pipeline, models
        self._methods: dict[str, tuple[DeploymentHandle, DeploymentHandle]] = {}
        self._log_dir = locate(config.sink.log_dir)
        self._sink = None
        serving = config.serving
        self._coalescer = Coalescer(
            self._call_model, serving.coalesce_window_s, serving.coalesce_max_rows
        )

    async def predict(
        self, model_type: str, timeframe: str, version: str | None, rows: np.ndarray
    ) -> dict:
        if f"{model_type}-{timeframe}" not in self._models:
            raise BackendError(
                404, f"model {model_type}-{timeframe} is not served here; see GET /v1/models"
            )
        return await self._coalescer.predict((model_type, timeframe, version), rows)

    async def _call_model(self, key: tuple[str, str, str | None], rows: np.ndarray) -> dict:
        model_type, timeframe, version = key
        served, named = self._model_methods(f"{model_type}-{timeframe}")
        rows = rows.astype(np.float32)  # what the model reads anyway (predictor.py): half the bytes
        return await _answer(
            served.remote(rows) if version is None else named.remote(rows, version)
        )

    def _model_methods(self, model_id: str) -> tuple[DeploymentHandle, DeploymentHandle]:
        """``predict`` and ``predict_version`` handles, made on first use (in the request
        loop, as before) and kept: ``handle.predict`` builds a new handle at every access."""
        if model_id not in self._methods:
            handle = self._models[model_id]
            self._methods[model_id] = (handle.predict, handle.predict_version)
        return self._methods[model_id]

    async def latest(self, symbol: str | None, timeframe: str | None) -> list[dict]:
        return await _answer(self._pipeline.latest.remote(symbol, timeframe))

    async def history(self, query: HistoryQuery) -> HistoryPage:
        return await asyncio.to_thread(query_log, self._log_dir, query)

    async def snapshot(self) -> tuple[int, list[dict]]:
        # From the sink itself, as ``since`` is: through the pipeline, its answer could
        # overtake or trail a ``since`` in flight.
        try:
            return await (await self._sink_actor()).snapshot.remote()
        except RayActorError:
            raise BackendError(503, "the sink is restarting; subscribe again") from None

    async def since(self, cursor: int, timeout_s: float) -> tuple[int, list[dict], bool]:
        try:
            return await (await self._sink_actor()).since.remote(cursor, timeout_s)
        except RayActorError:  # the sink is restarting: nothing new for now
            await asyncio.sleep(timeout_s)
            return cursor, [], False

    async def _sink_actor(self):
        if self._sink is None:
            self._sink = (await self._pipeline.actors.remote())["sink"]
        return self._sink

    async def candles(
        self, exchange: str, symbol: str, timeframe: str, limit: int
    ) -> dict[str, list] | None:
        return await _answer(self._pipeline.candles.remote(exchange, symbol, timeframe, limit))

    async def outcomes(self) -> dict:
        return await _answer(self._pipeline.outcome_metrics.remote())

    async def status(self) -> dict:
        status = await _answer(self._pipeline.status.remote())
        merged = {"http_predicts": self._coalescer.requests, "model_calls": self._coalescer.calls}
        return {**status, "ingress": merged}

    async def feed_symbols(self, feed: str) -> dict:
        return await _answer(self._pipeline.feed_symbols.remote(feed))

    async def change_symbols(
        self, feed: str, add: list[str], remove: list[str], warmup_minutes: int | None
    ) -> dict:
        return await _answer(
            self._pipeline.change_symbols.remote(feed, add, remove, warmup_minutes)
        )

    async def ready(self) -> tuple[bool, dict]:
        try:
            served = await self.served_models()
            await self._pipeline.status.remote()
        except Exception as exc:  # not ready is an answer, not an error
            return False, {"reason": type(exc).__name__}
        return True, {"models": served}

    async def served_models(self) -> dict[str, str]:
        described = await asyncio.gather(*(h.describe.remote() for h in self._models.values()))
        # the champions' versions (a challenger's is on its scoreboard row)
        return {
            d["model_id"]: d["version"]
            for d in described
            if d.get("role", "production") == "production"
        }


async def _answer(call):
    """Await a handle call; the backend being down is a 503, a refused request keeps its status."""
    try:
        return await call
    except BackendError as exc:  # raised in the pipeline: its own message, not Ray's wrapping
        message = str(getattr(exc, "cause", None) or exc).splitlines()[-1]
        raise BackendError(getattr(exc, "status", 502), message) from None
    except RayError as exc:
        raise BackendError(503, f"backend unavailable: {type(exc).__name__}") from None


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class Ingress:
    """The API needs this replica's config and handles, so it is built after __init__
    (Serve's late-bound ingress: ``__serve_build_asgi_app__``)."""

    def __init__(self, config: TickcastConfig, pipeline: DeploymentHandle, models: dict):
        registry = open_registry(config.models_dir)
        self._api = create_api(config.api, ServeBackend(config, pipeline, models), registry)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._api
