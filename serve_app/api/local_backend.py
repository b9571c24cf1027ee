"""The API's backend in one process, no Ray: registry models run in-process, predictions
come from a ``LatestStore`` and the Parquet log. Used by the plain FastAPI + uvicorn
baseline in ``orchestrator/bench/http.py`` and by the API fuzz test."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from orchestrator.models.predictor import OnnxPredictor
from orchestrator.models.registry import ModelManifest, Registry, RegistryError
from orchestrator.sinks.history import HistoryPage, HistoryQuery, query_log
from orchestrator.sinks.latest import LatestStore
from serve_app.api.backend import BackendError


class LocalBackend:
    def __init__(
        self, models_dir: Path, log_dir: Path, served: dict[str, str | None] | None = None
    ):
        self.registry = Registry(models_dir)
        self.log_dir = Path(log_dir)
        self.store = LatestStore()
        # What the shards would hold: filled by whoever drives this backend (tests, benches).
        self.series: dict[tuple[str, str, str], dict[str, list]] = {}
        self.outcome_metrics: dict = {"window": 0, "pending": 0, "models": {}}
        self._predictors: dict[tuple[str, str, str], OnnxPredictor] = {}
        self._served: dict[str, str] = {}
        for key, version in (served or {}).items():
            model_type, timeframe = key.split("-", 1)
            self._served[key] = self._resolve(model_type, timeframe, version).version
            self._predictor(model_type, timeframe, self._served[key])  # loaded before any request

    def _predictor(self, model_type: str, timeframe: str, version: str) -> OnnxPredictor:
        """A named version's predictor; only the first request for it reads the registry (a
        version's model file never changes, and resolving lists every manifest: ~1 ms)."""
        key = (model_type, timeframe, version)
        if key not in self._predictors:
            manifest = self._resolve(model_type, timeframe, version)
            self._predictors[key] = OnnxPredictor(manifest, self.registry.load_bytes(manifest))
        return self._predictors[key]

    def _resolve(self, model_type: str, timeframe: str, version: str | None) -> ModelManifest:
        try:
            return self.registry.resolve(model_type, timeframe, version)
        except RegistryError as exc:
            raise BackendError(404, str(exc)) from None

    async def predict(
        self, model_type: str, timeframe: str, version: str | None, rows: np.ndarray
    ) -> dict:
        model_id = f"{model_type}-{timeframe}"
        if model_id not in self._served:
            raise BackendError(404, f"model {model_id} is not served here")
        predictor = self._predictor(model_type, timeframe, version or self._served[model_id])
        return predictor.answer(predictor.predict(rows))

    async def latest(self, symbol: str | None, timeframe: str | None) -> list[dict]:
        return self.store.rows(symbol, timeframe)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        return query_log(self.log_dir, query)

    async def snapshot(self) -> tuple[int, list[dict]]:
        return self.store.snapshot()

    async def since(self, cursor: int, timeout_s: float) -> tuple[int, list[dict], bool]:
        result = self.store.since(cursor)
        if not result[1]:
            await asyncio.sleep(min(timeout_s, 0.05))
        return result

    async def candles(
        self, exchange: str, symbol: str, timeframe: str, limit: int
    ) -> dict[str, list] | None:
        found = self.series.get((exchange, symbol, timeframe))
        return None if found is None else {k: v[-limit:] for k, v in found.items()}

    async def outcomes(self) -> dict:
        return self.outcome_metrics

    async def status(self) -> dict:
        return {"backend": "local", "served": dict(self._served)}

    async def ready(self) -> tuple[bool, dict]:
        return bool(self._served), {"served": dict(self._served)}

    async def served_models(self) -> dict[str, str]:
        return dict(self._served)

    async def feed_symbols(self, feed: str) -> dict:
        raise BackendError(404, f"no feed {feed!r}: this backend runs no feeds")

    async def change_symbols(
        self, feed: str, add: list[str], remove: list[str], warmup_minutes: int | None
    ) -> dict:
        raise BackendError(404, f"no feed {feed!r}: this backend runs no feeds")
