"""Prediction events: one stable schema for the latest store, the log and the stream (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from orchestrator.signals import direction_signals

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
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

    @classmethod
    def from_response(cls, response: dict) -> ModelOutput:
        values = np.asarray(response["values"], dtype=np.float64)
        return cls(response["model_id"], response["model_type"], response["version"],
                   tuple(response["names"]), values.reshape(len(values), -1))


@dataclass(frozen=True)
class TickRows:
    """The rows of one candle-close tick that were sent to a model."""

    exchange: np.ndarray
    symbol: np.ndarray
    timeframe: str
    open_time: np.ndarray
    close: np.ndarray
    emitted_at_ms: float  # wall clock when the feed emitted the closing candle


def event_ids(output: ModelOutput, rows: TickRows) -> list[str]:
    """Idempotent key: the same model version on the same candle always gives the same id."""
    prefix = f"{output.model_id}@{output.version}"
    return [
        f"{prefix}|{ex}|{sym}|{rows.timeframe}|{t}"
        for ex, sym, t in zip(rows.exchange, rows.symbol, rows.open_time, strict=True)
    ]


def build_predictions(
    output: ModelOutput, rows: TickRows, now_ms: float, high: float, very_high: float
) -> pa.Table:
    n, primary = len(output.values), output.values[:, 0]
    if output.model_type == "direction":
        signal, tier = direction_signals(primary, high, very_high)
    else:
        signal = tier = np.full(n, None, dtype=object)
    price = rows.close * np.exp(primary) if output.model_type == "return" else np.full(n, None)
    named = [list(zip(output.names, row, strict=True)) for row in output.values.tolist()]
    columns = {
        "event_id": event_ids(output, rows),
        "exchange": rows.exchange,
        "symbol": rows.symbol,
        "timeframe": np.full(n, rows.timeframe, dtype=object),
        "open_time": rows.open_time,
        "model_id": np.full(n, output.model_id, dtype=object),
        "model_version": np.full(n, output.version, dtype=object),
        "model_type": np.full(n, output.model_type, dtype=object),
        "value": primary,
        "outputs": named,
        "predicted_price": price,
        "signal": signal,
        "confidence": tier,
        "predicted_at": np.full(n, int(now_ms), dtype=np.int64),
        "latency_ms": np.full(n, now_ms - rows.emitted_at_ms),
    }
    return pa.table({k: pa.array(v, PREDICTION_SCHEMA.field(k).type) for k, v in columns.items()},
                    schema=PREDICTION_SCHEMA)

