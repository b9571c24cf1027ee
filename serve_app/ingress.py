"""The public HTTP API (FastAPI on Serve), versioned under /v1."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI, Query
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle

from orchestrator.market.timeframes import TIMEFRAMES

api = FastAPI(
    title="tickcast",
    version="0.1.0",
    description="Real-time market predictions served by Ray Serve.",
)


class Prediction(BaseModel):
    exchange: str
    symbol: str
    timeframe: str
    open_time: int
    open_time_iso: str
    model_id: str
    model_version: str
    model_type: str
    prob_up: float | None
    value: float
    outputs: dict[str, float]
    predicted_price: float | None
    signal: str | None
    confidence: str | None
    latency_ms: float


class LatestPredictions(BaseModel):
    count: int
    predictions: list[Prediction]


def to_prediction(row: dict) -> Prediction:
    iso = datetime.fromtimestamp(row["open_time"] / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    prob_up = row["value"] if row["model_type"] == "direction" else None
    fields = {k: row[k] for k in Prediction.model_fields if k in row and k != "outputs"}
    outputs = dict(row.get("outputs") or [])
    return Prediction(**fields, open_time_iso=iso, prob_up=prob_up, outputs=outputs)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class Ingress:
    def __init__(self, pipeline: DeploymentHandle):
        self._pipeline = pipeline

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/v1/predictions/latest", response_model=LatestPredictions)
    async def latest(
        self,
        symbol: str | None = Query(None, max_length=64, description="e.g. BTC/USDT"),
        timeframe: str | None = Query(None, pattern="^(" + "|".join(TIMEFRAMES) + ")$"),
    ) -> LatestPredictions:
        rows = await self._pipeline.latest.remote(symbol, timeframe)
        predictions = [to_prediction(r) for r in rows]
        return LatestPredictions(count=len(predictions), predictions=predictions)
