"""Request and response models of the public API: strict, so a bad request is a 4xx that
names the field, never a 500."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.config import ModelType
from orchestrator.market.timeframes import TIMEFRAMES

TIMEFRAME_PATTERN = "^(" + "|".join(TIMEFRAMES) + ")$"
VERSION_PATTERN = r"^v\d{1,6}$"
SYMBOL_PATTERN = r"^[A-Za-z0-9._-]{1,32}/[A-Za-z0-9._-]{1,32}(:[A-Za-z0-9._-]{1,32})?$"
FEATURE_NAME_PATTERN = r"^[a-z0-9_]{1,64}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CandleIn(Strict):
    open_time: int = Field(ge=0, lt=10**14, description="epoch ms, UTC")
    open: float = Field(gt=0)
    high: float = Field(gt=0)
    low: float = Field(gt=0)
    close: float = Field(gt=0)
    volume: float = Field(ge=0)
    taker_buy_base: float | None = Field(None, ge=0)


class PredictRequest(Strict):
    """Exactly one of ``rows`` (feature vectors in ``columns`` order, default: the model's
    feature list from GET /v1/models), ``features`` (one name -> value object per row) or
    ``candles`` (a window of raw candles, oldest first: the server computes the features
    with the pipeline's code and predicts the last candle)."""

    model_type: ModelType
    timeframe: str = Field(pattern=TIMEFRAME_PATTERN)
    version: str | None = Field(None, pattern=VERSION_PATTERN)
    rows: list[list[float]] | None = Field(None, min_length=1)
    columns: list[str] | None = Field(None, min_length=1, max_length=64)
    features: list[dict[str, float]] | None = Field(None, min_length=1)
    candles: list[CandleIn] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one_input(self) -> PredictRequest:
        given = [name for name in ("rows", "features", "candles") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of rows, features, candles (got {given or 'none'})")
        if self.columns is not None and self.rows is None:
            raise ValueError("columns only go with rows")
        return self


class PredictResponse(BaseModel):
    model_id: str
    model_type: str
    timeframe: str
    version: str
    outputs: list[str]
    predictions: list[dict[str, float]]
    open_time: int | None = Field(None, description="for candles: the predicted candle's open time")


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


class PredictionPage(BaseModel):
    total: int
    offset: int
    limit: int
    next_offset: int | None
    predictions: list[Prediction]


class StreamCommand(Strict):
    action: Literal["subscribe", "status", "stats"]
    symbols: list[str] | None = Field(None, max_length=1000)
    timeframes: list[str] | None = Field(None, max_length=len(TIMEFRAMES))


def to_prediction(row: dict) -> Prediction:
    iso = datetime.fromtimestamp(row["open_time"] / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    prob_up = row["value"] if row["model_type"] == "direction" else None
    fields = {k: row[k] for k in Prediction.model_fields if k in row and k != "outputs"}
    return Prediction(**fields, open_time_iso=iso, prob_up=prob_up, outputs=dict(row.get("outputs") or {}))
