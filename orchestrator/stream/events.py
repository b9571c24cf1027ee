"""Prediction events: one stable schema for the latest store, the log and the stream (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.market.schema import constant_strings, cycled_strings
from orchestrator.market.timeframes import timeframe_ms
from orchestrator.stream.signals import direction_signals

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("service", pa.string()),
        pa.field("environment", pa.string()),
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("open_time", pa.int64(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("model_type", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("outputs", pa.map_(pa.string(), pa.float64())),
        pa.field("predicted_price", pa.float64()),
        pa.field("signal", pa.string()),
        pa.field("confidence", pa.string()),
        pa.field("trend", pa.string()),
        pa.field("warm", pa.bool_()),
        # the row inside the model's training distribution (docs/models.md); null: unknown
        pa.field("in_distribution", pa.bool_()),
        # seconds from the end of the model's training range to the candle's close; null:
        # unknown; negative: a candle inside the training range (an in-sample prediction)
        pa.field("model_age_s", pa.float64()),
        # the model's role (docs/models.md#champion-and-challenger): production, shadow or
        # canary; null in logs written before roles existed (production)
        pa.field("role", pa.string()),
        # the row is the published signal of its (model_id, candle): false for a shadow's
        # rows and for the rows a canary or its champion does not publish; null: true
        pa.field("published", pa.bool_()),
        pa.field("predicted_at", pa.int64(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
    ]
)


@dataclass(frozen=True)
class ModelOutput:
    """What a model deployment returns for one request: which model, and its named outputs
    per row (``values`` is (n, len(names)); column 0 is the primary value)."""

    model_id: str
    model_type: str
    version: str
    names: tuple[str, ...]
    values: np.ndarray
    in_distribution: np.ndarray | None = None  # (n,) bool, where the model said
    trained_until_ms: int | None = None  # the end of the model's training range
    role: str = "production"  # production, or a challenger's shadow / canary

    @classmethod
    def from_response(cls, response: dict) -> ModelOutput:
        values = np.asarray(response["values"], dtype=np.float64)
        inside = response.get("in_distribution")
        return cls(
            response["model_id"],
            response["model_type"],
            response["version"],
            tuple(response["names"]),
            values.reshape(len(values), -1),
            None if inside is None else np.asarray(inside, dtype=bool),
            response.get("trained_until_ms"),
            response.get("role", "production"),
        )


@dataclass(frozen=True)
class TickRows:
    """The rows of one candle-close tick that were sent to a model."""

    exchange: np.ndarray | pa.Array  # strings, as numpy objects or Arrow
    symbol: np.ndarray | pa.Array
    timeframe: str
    open_time: np.ndarray
    close: np.ndarray
    emitted_at_ms: float  # wall clock when the feed emitted the closing candle
    trend: pa.Array | None = None  # OVERBOUGHT / OVERSOLD / BULLISH / BEARISH / NEUTRAL


def event_ids(output: ModelOutput, rows: TickRows) -> pa.Array:
    """Idempotent key: the same model version on the same candle always gives the same id
    (``model_id@version|exchange|symbol|timeframe|open_time``), joined in Arrow, not Python."""
    return join_event_ids(
        pa.scalar(model_key(output.model_id, output.version)),  # scalars broadcast
        pa.array(rows.exchange, pa.string()),
        pa.array(rows.symbol, pa.string()),
        pa.scalar(rows.timeframe),
        pa.array(rows.open_time, pa.int64()),
    )


def model_key(model_id: str, version: str) -> str:
    return f"{model_id}@{version}"


def join_event_ids(model, exchange, symbol, timeframe, open_time: pa.Array) -> pa.Array:
    """The event ids of rows whose parts are given as Arrow arrays or scalars (the one
    definition: an outcome recomputes its prediction's id with it)."""
    parts = [model, exchange, symbol, timeframe, pc.cast(open_time, pa.string())]
    return pc.binary_join_element_wise(*parts, "|")


def outputs_map(names: tuple[str, ...], values: np.ndarray) -> pa.MapArray:
    """Each row's named outputs as an Arrow map, built from flat arrays in one step."""
    n, k = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    keys = cycled_strings(names, n)
    return pa.MapArray.from_arrays(offsets, keys, pa.array(values.reshape(-1), pa.float64()))


@dataclass(frozen=True)
class SignalLimits:
    """When a direction signal is NEUTRAL whatever its probability (``signals`` config):
    on a row outside the model's training distribution, and/or from a model older than
    ``max_model_age_s`` at the candle's close."""

    neutral_out_of_distribution: bool = False
    max_model_age_s: float | None = None

    def neutral(self, inside: np.ndarray | None, age_s: np.ndarray | None) -> np.ndarray | None:
        """(n,) bool: rows whose signal is forced NEUTRAL, or None for none."""
        forced = None
        if self.neutral_out_of_distribution and inside is not None:
            forced = ~inside
        if self.max_model_age_s is not None and age_s is not None:
            old = age_s > self.max_model_age_s
            forced = old if forced is None else forced | old
        return forced


def model_age_s(output: ModelOutput, rows: TickRows) -> np.ndarray | None:
    """Seconds from the end of the model's training range to each candle's close (the
    candle's time, not the wall clock: a replay or a backfill ages as the market did)."""
    if output.trained_until_ms is None:
        return None
    close_ms = np.asarray(rows.open_time, dtype=np.int64) + timeframe_ms(rows.timeframe)
    return (close_ms - output.trained_until_ms) / 1000.0


def build_predictions(
    output: ModelOutput,
    rows: TickRows,
    now_ms: float,
    high: float,
    very_high: float,
    *,
    service: str = "tickcast",
    environment: str = "local",
    limits: SignalLimits | None = None,
    role: str = "production",
    published: np.ndarray | None = None,
) -> pa.Table:
    """One model's answer for one tick as events; ``published`` (n,) bool, default all."""
    n, primary = len(output.values), output.values[:, 0]
    inside = output.in_distribution
    age_s = model_age_s(output, rows)
    if output.model_type == "direction":
        neutral = (limits or SignalLimits()).neutral(inside, age_s)
        signal, tier = direction_signals(primary, high, very_high, neutral=neutral)
    else:
        signal = tier = pa.nulls(n, pa.string())
    price = rows.close * np.exp(primary) if output.model_type == "return" else np.full(n, np.nan)
    columns = {
        "event_id": event_ids(output, rows),
        "service": constant_strings(service, n),
        "environment": constant_strings(environment, n),
        "exchange": pa.array(rows.exchange, pa.string()),
        "symbol": pa.array(rows.symbol, pa.string()),
        "timeframe": constant_strings(rows.timeframe, n),
        "open_time": pa.array(rows.open_time, pa.int64()),
        "model_id": constant_strings(output.model_id, n),
        "model_version": constant_strings(output.version, n),
        "model_type": constant_strings(output.model_type, n),
        "value": pa.array(primary, pa.float64()),
        "outputs": outputs_map(output.names, output.values),
        "predicted_price": pa.array(price, pa.float64(), from_pandas=True),  # NaN -> null
        "signal": signal,
        "confidence": tier,
        "trend": pa.nulls(n, pa.string()) if rows.trend is None else rows.trend,
        "warm": pa.array(np.ones(n, dtype=bool)),  # only rows with every required feature warm
        "in_distribution": pa.nulls(n, pa.bool_()) if inside is None else pa.array(inside),
        "model_age_s": pa.nulls(n, pa.float64()) if age_s is None else pa.array(age_s),
        "role": constant_strings(role, n),
        "published": pa.array(np.ones(n, dtype=bool) if published is None else published),
        "predicted_at": pa.array(np.full(n, int(now_ms), dtype=np.int64)),
        "latency_ms": pa.array(np.full(n, now_ms - rows.emitted_at_ms), pa.float64()),
    }
    return pa.Table.from_arrays(
        [columns[f.name] for f in PREDICTION_SCHEMA], schema=PREDICTION_SCHEMA
    )


def published_only(table: pa.Table) -> pa.Table:
    """The rows that are signals (the latest store, the stream, Redis, Kafka): all but
    those marked ``published: false`` (a shadow's, or the side of a canary not published)."""
    if "published" not in table.column_names:
        return table
    column = table.column("published")
    if column.null_count == 0 and pc.all(column).as_py() is not False:
        return table
    return table.filter(pc.fill_null(column, True))
