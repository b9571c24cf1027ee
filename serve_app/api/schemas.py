"""Request and response models of the public API: strict, so a bad request is a 4xx that
names the field, never a 500. Pure: no web framework, no I/O."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Annotated, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.ipc as ipc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.config import ModelType
from orchestrator.market.timeframes import TIMEFRAMES

TIMEFRAME_PATTERN = "^(" + "|".join(TIMEFRAMES) + ")$"
VERSION_PATTERN = r"^v\d{1,6}$"
EXCHANGE_PATTERN = r"^[A-Za-z0-9._-]{1,32}$"
SYMBOL_PATTERN = r"^[A-Za-z0-9._-]{1,32}/[A-Za-z0-9._-]{1,32}(:[A-Za-z0-9._-]{1,32})?$"
FEATURE_NAME_PATTERN = r"^[a-z0-9_]{1,64}$"


class ApiError(Exception):
    """A request the API refuses: answered with ``status`` and ``field`` (a dotted path such
    as ``body.columns`` or ``query.timeframe``) in FastAPI's validation-error shape."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message


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
        given = [
            name for name in ("rows", "features", "candles") if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(f"give exactly one of rows, features, candles (got {given or 'none'})")
        if self.columns is not None and self.rows is None:
            raise ValueError("columns only go with rows")
        return self


class ArrowQuery(BaseModel):
    """The model an Arrow body is for (JSON bodies name it inside). Other query keys, such as
    ``api_key``, are not this model's business."""

    model_type: ModelType = Field(description="required with an Arrow body")
    timeframe: str = Field(pattern=TIMEFRAME_PATTERN, description="required with an Arrow body")
    version: str | None = Field(
        None, pattern=VERSION_PATTERN, description="default: the served one"
    )


def query_parameters(model: type[BaseModel]) -> list[dict]:
    """OpenAPI ``parameters`` for a model read from the query by hand: each optional, since
    only Arrow requests carry them."""
    schema = model.model_json_schema()
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": prop,
            "description": prop.get("description", ""),
        }
        for name, prop in schema["properties"].items()
    ]


class PredictResponse(BaseModel):
    model_id: str
    model_type: str
    timeframe: str
    version: str
    outputs: list[str]
    predictions: list[dict[str, float]]
    open_time: int | None = Field(None, description="for candles: the predicted candle's open time")
    in_distribution: list[bool] | None = Field(
        None, description="per row: inside the model's training distribution (docs/models.md)"
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
    trend: str | None = None
    in_distribution: bool | None = None
    model_age_s: float | None = None
    role: str | None = Field(None, description="production, shadow or canary; null: production")
    published: bool | None = Field(None, description="the signal of its candle; null: true")
    latency_ms: float


class LatestPredictions(BaseModel):
    count: int
    predictions: list[Prediction]


class PredictionPage(BaseModel):
    total: int | None = Field(None, description="every matching row; only with count=true")
    offset: int
    limit: int
    next_offset: int | None
    next_cursor: str | None = Field(None, description="pass as cursor for the next page")
    skipped_files: int = Field(
        0, description="damaged log files left out of this page (rows may be missing; logged)"
    )
    predictions: list[Prediction]


class StreamCommand(Strict):
    action: Literal["auth", "subscribe", "status", "stats"]
    symbols: list[str] | None = Field(None, max_length=5000)
    timeframes: list[str] | None = Field(None, max_length=len(TIMEFRAMES))
    api_key: str | None = Field(
        None,
        max_length=256,
        description="with action auth: the first message, when the "
        "client cannot send the X-API-Key header (a browser)",
    )


FEED_PATTERN = r"^[A-Za-z0-9._-]{1,100}$"
Symbol = Annotated[str, Field(pattern=SYMBOL_PATTERN)]


class SymbolChange(Strict):
    """Body of POST / DELETE /v1/admin/feeds/{feed}/symbols."""

    symbols: list[Symbol] = Field(min_length=1, max_length=5000, description="e.g. ['BTC/USDT']")
    warmup_minutes: int | None = Field(
        None,
        ge=0,
        le=100_000,
        description="POST: history sent first to warm new symbols up (default: the feed's)",
    )


class SymbolChangeResult(BaseModel):
    feed: str
    exchange: str
    added: list[str] = Field(description="symbols the feed carries from now on")
    removed: list[str] = Field(description="symbols it no longer carries")
    unchanged: list[str] = Field(description="already carried (POST) or not carried (DELETE)")
    warmup_candles: int
    warmup_from: int | None = Field(
        description="open time (epoch ms) of the first warm-up candle; predictions start after "
        "the history, a few minutes of it sent with each batch (stream.warmup_minutes_per_batch)"
    )
    symbols: int = Field(description="symbols the feed carries now")


class FeedSymbols(BaseModel):
    feed: str
    symbols: list[str]


class Candle(BaseModel):
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float | None


class CandleSeries(BaseModel):
    exchange: str
    symbol: str
    timeframe: str
    count: int
    candles: list[Candle]


class Comparison(BaseModel):
    """A challenger against its champion on the same live outcomes (paired block bootstrap;
    docs/models.md#champion-and-challenger)."""

    champion_version: str | None
    challenger_version: str | None
    pairs: int = Field(description="candles both versions were scored on")
    blocks: int = Field(description="bootstrap blocks (30 candles each) the pairs fall in")
    champion_loss: float | None = Field(description="mean log loss (classifiers) or |error|")
    challenger_loss: float | None
    improvement: float | None = Field(
        description="mean champion loss minus challenger loss: > 0 favours the challenger"
    )
    ci95: list[float] | None = Field(description="95% interval of the improvement")
    verdict: str = Field(
        description="challenger better / champion better (interval clear of zero), undecided, "
        "too few blocks, no pairs yet"
    )


class ModelScore(BaseModel):
    model_id: str
    model_type: str
    timeframe: str
    role: str = Field(
        "production", description="production (the champion), or a challenger's shadow / canary"
    )
    version: str | None = Field(description="the newest version scored in the window")
    serving: str | None = Field(description="the version serving now")
    count: int = Field(description="outcomes in the sliding window")
    scored: int
    expired: int
    metrics: dict[str, float | None] = Field(description="accuracy, brier, log_loss or mae, rmse")
    baseline: dict[str, float] | None = Field(
        description="the naive baseline's metrics over the same outcomes"
    )
    calibration: list[dict[str, float]] | None = Field(
        None, description="direction models: per P(up) bin, mean p, observed frequency, n"
    )
    comparison: Comparison | None = Field(
        None, description="a challenger's row: its comparison with the champion"
    )


class Scoreboard(BaseModel):
    window: int
    pending: int
    models: list[ModelScore]


METRIC_NAMES = ("accuracy", "brier", "log_loss", "mae", "rmse")


def to_scoreboard(outcomes: dict, served: dict[str, str]) -> Scoreboard:
    """The merged outcome metrics (``merge_metrics``) as one row per model and timeframe,
    each challenger's row after its champion's."""
    rows = []
    for section in ("models", "challengers"):
        for model_id, by_tf in sorted(outcomes.get(section, {}).items()):
            for timeframe, stats in by_tf.items():
                champion = section == "models"
                rows.append(
                    ModelScore(
                        model_id=model_id,
                        model_type=stats["model_type"],
                        timeframe=timeframe,
                        role=stats.get("role", "production"),
                        version=stats.get("version"),
                        serving=served.get(model_id) if champion else stats.get("version"),
                        count=stats["count"],
                        scored=stats["scored"],
                        expired=stats["expired"],
                        metrics={k: stats[k] for k in METRIC_NAMES if k in stats},
                        baseline=stats.get("baseline"),
                        calibration=stats.get("calibration"),
                        comparison=stats.get("comparison"),
                    )
                )
    first = {(r.model_id, r.timeframe): i for i, r in enumerate(rows) if r.role == "production"}
    last = len(rows)  # a challenger without a champion row goes last
    rows.sort(key=lambda r: (first.get((r.model_id, r.timeframe), last), r.role != "production"))
    return Scoreboard(
        window=outcomes.get("window", 0), pending=outcomes.get("pending", 0), models=rows
    )


def to_prediction(row: dict) -> Prediction:
    iso = datetime.fromtimestamp(row["open_time"] / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    prob_up = row["value"] if row["model_type"] == "direction" else None
    fields = {k: row[k] for k in Prediction.model_fields if k in row and k != "outputs"}
    return Prediction(
        **fields, open_time_iso=iso, prob_up=prob_up, outputs=dict(row.get("outputs") or {})
    )


# --- POST /v1/predict bodies: JSON in and out, or Arrow IPC streams ------------------------

ARROW_STREAM = "application/vnd.apache.arrow.stream"
# What pyarrow and the flatbuffer peek raise on a malformed stream (StopIteration: no schema).
_ARROW_READ_ERRORS = (
    pa.ArrowException,
    ValueError,
    TypeError,
    OSError,
    NotImplementedError,
    IndexError,
    StopIteration,
    struct.error,
)


def body_media_type(content_type: str | None) -> str:
    """``json`` or ``arrow`` for a Content-Type header; no header means JSON (as FastAPI)."""
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return "json"
    if media == ARROW_STREAM:
        return "arrow"
    raise ApiError(
        415, "header.Content-Type", f"send application/json or {ARROW_STREAM}, not {media!r}"
    )


def read_arrow_columns(body: bytes, max_rows: int) -> tuple[list[str], np.ndarray]:
    """Column names and a float64 (rows, columns) matrix from an Arrow IPC stream of numeric,
    finite, non-null columns. Every way the stream can be wrong is an ``ApiError``."""
    if not body:
        raise ApiError(422, "body", "empty body: send an Arrow IPC stream")
    try:
        batch = _read_bounded_stream(body, max_rows)
        matrix = _numeric_matrix(batch)
    except _ARROW_READ_ERRORS as exc:
        raise ApiError(
            422, "body", f"not a readable Arrow IPC stream ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    bad = ~np.isfinite(matrix)
    if bad.any():
        row, col = (int(v[0]) for v in np.nonzero(bad))
        raise ApiError(
            422,
            "body.columns",
            f"column {batch.schema.names[col]!r}, row {row}: null or not a finite number",
        )
    return batch.schema.names, matrix


def _read_bounded_stream(body: bytes, max_rows: int) -> pa.RecordBatch:
    """The stream's rows as one record batch, refused before decoding when compressed or
    longer than ``max_rows``."""
    messages = ipc.MessageReader.open_stream(pa.py_buffer(body))
    schema = ipc.read_schema(messages.read_next_message())
    _check_names(schema)
    batches, rows = [], 0
    for message in messages:
        if message.type != "record batch":
            raise ApiError(422, "body", f"unexpected {message.type} message in the stream")
        compressed, length = _record_batch_header(message.metadata.to_pybytes())
        if compressed:  # a few KB of zstd can declare gigabytes: refused before decoding
            raise ApiError(422, "body", "compressed Arrow buffers are not accepted")
        rows += length
        if rows > max_rows:
            raise ApiError(413, "body.rows", f"at most {max_rows} rows per request, got {rows}+")
        batches.append(ipc.read_record_batch(message, schema))
    if rows == 0:
        raise ApiError(422, "body", "the Arrow stream holds no rows")
    batch = batches[0] if len(batches) == 1 else pa.concat_batches(batches)
    batch.validate(full=True)
    return batch


def _check_names(schema: pa.Schema) -> None:
    if len(schema) == 0:
        raise ApiError(422, "body.columns", "the Arrow stream has no columns")
    if len(set(schema.names)) != len(schema.names):
        raise ApiError(422, "body.columns", "column names must be unique")


def _numeric_matrix(batch: pa.RecordBatch) -> np.ndarray:
    """All columns at once (one C++ call: per-column conversion cost 2 us a column); nulls
    become NaN. On a column type it cannot take, the error names that column."""
    try:
        return np.asarray(batch.to_tensor(null_to_nan=True), dtype=np.float64)
    except (pa.ArrowTypeError, pa.ArrowNotImplementedError):
        _check_types(batch.schema)
        raise


def _check_types(schema: pa.Schema) -> None:
    for field in schema:
        kind = field.type
        if not (
            pa.types.is_float32(kind) or pa.types.is_float64(kind) or pa.types.is_integer(kind)
        ):
            raise ApiError(
                422,
                "body.columns",
                f"column {field.name!r} is {kind}: send float32 or float64 columns",
            )


def _record_batch_header(metadata: bytes) -> tuple[bool, int]:
    """(compressed, rows) of a record-batch message, read from its flatbuffer: pyarrow
    decompresses while it reads, so this is the only way to look first. Message.header is
    table field 2; RecordBatch.length is field 0 and RecordBatch.compression field 3."""
    root = struct.unpack_from("<I", metadata, 0)[0]
    header = _flatbuffer_field(metadata, root, 2)
    if header is None:
        raise ValueError("record batch message without a header")
    batch = header + struct.unpack_from("<I", metadata, header)[0]
    length = _flatbuffer_field(metadata, batch, 0)
    rows = struct.unpack_from("<q", metadata, length)[0] if length is not None else 0
    if rows < 0:
        raise ValueError(f"negative row count {rows}")
    return _flatbuffer_field(metadata, batch, 3) is not None, rows


def _flatbuffer_field(buf: bytes, table: int, index: int) -> int | None:
    """Absolute position of field ``index`` of the flatbuffer table at ``table``, or None."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    slot = 4 + 2 * index
    if slot + 2 > struct.unpack_from("<H", buf, vtable)[0]:
        return None
    offset = struct.unpack_from("<H", buf, vtable + slot)[0]
    return table + offset if offset else None


def predict_json(result: dict, timeframe: str, open_time: int | None) -> bytes:
    """``PredictResponse`` as JSON from a backend's predict result, built directly: validating
    it row by row through pydantic cost more than the model. Non-finite outputs become null,
    as pydantic writes them."""
    names = list(result["names"])
    values = np.asarray(result["values"], dtype=np.float64).reshape(-1, len(names))
    if len(names) == 1:  # the common case, and 3x faster than zipping each row
        rows = [{names[0]: x} for x in values[:, 0].tolist()]
    else:
        rows = [dict(zip(names, row)) for row in values.tolist()]  # noqa: B905 - (n, len(names))
    return orjson.dumps(
        {
            "model_id": result["model_id"],
            "model_type": result["model_type"],
            "timeframe": timeframe,
            "version": result["version"],
            "outputs": names,
            "predictions": rows,
            "open_time": open_time,
            "in_distribution": None
            if result.get("in_distribution") is None
            else np.asarray(result["in_distribution"], dtype=bool).tolist(),
        }
    )
